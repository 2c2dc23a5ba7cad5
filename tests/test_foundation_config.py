"""VAEConfig validation: invalid values and keys raise a ConfigError naming the problem."""

from __future__ import annotations

import pytest

from vae.config import ConfigError, VAEConfig


@pytest.mark.parametrize(("overrides", "message"), [
    ({"model.latnt_dim": 8}, r"unknown config key 'model.latnt_dim'"),
    ({"model.image_size": 40}, r"model.image_size=40 is invalid; allowed: a multiple of 16"),
    ({"model.image_size": 16}, r"model.image_size=16 is invalid; .*>= 32"),
    ({"model.image_size": 64.0}, r"model.image_size=64.0 is invalid"),
    ({"model.in_channels": 2}, r"model.in_channels=2 is invalid; allowed: 1 or 3"),
    ({"model.in_channels": 3.0}, r"model.in_channels=3.0 is invalid; allowed: 1 or 3"),
    ({"model.covariance": "lowrank", "model.latent_dim": 8, "model.rank": 8},
     r"model.rank=8 must be < model.latent_dim=8"),
    ({"model.covariance": "cholesky"}, r"unknown model.covariance 'cholesky'; choose one of"),
    ({"model.output_activation": "tanh"}, r"loss.bce_weight=1.0 needs outputs in \(0, 1\).*'tanh'"),
    ({"model.output_activation": "relu", "loss.bce_weight": 0.5},
     r"loss.bce_weight=0.5 needs outputs in \(0, 1\).*'relu'"),
    ({"loss.kl_weight": -1.0}, r"loss.kl_weight=-1.0 is out of range; allowed \[0.0"),
    ({"loss.mse_weight": -0.1}, r"loss.mse_weight=-0.1 is out of range"),
    ({"loss.bce_weight": 0.0, "loss.mse_weight": 0.0, "loss.fft_weight": 0.0},
     r"all 0; at least one reconstruction weight must be > 0"),
    ({"loss.fft_weight": float("nan")}, r"loss.fft_weight=nan is invalid; allowed: a number in"),
    ({"train.precision": "fp16"}, r"unknown train.precision 'fp16'; choose one of"),
    ({"train.batch_size": 0}, r"train.batch_size=0 is invalid"),
])
def test_invalid_config_names_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message):
        VAEConfig().with_overrides(overrides)


def test_from_dict_is_strict_and_round_trips():
    config = VAEConfig().with_overrides({"model.latent_dim": 64, "model.covariance": "lowrank",
                                         "model.rank": 4, "loss.fft_weight": 0.1})
    assert VAEConfig.from_dict(config.to_dict()) == config
    assert VAEConfig().with_overrides(config.flat()) == config
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['model.colour'\]"):
        VAEConfig.from_dict({"model": {"colour": 1}})
    with pytest.raises(ConfigError, match=r"unknown config section\(s\) \['optim'\]"):
        VAEConfig.from_dict({"optim": {}})


def test_valid_edge_values_are_accepted_and_logits_follow_activation():
    config = VAEConfig().with_overrides({"model.image_size": 32, "model.latent_dim": 256,
                                         "model.covariance": "lowrank", "model.rank": 255,
                                         "model.output_activation": "none"})
    assert config.recon_is_logits and config.model.input_range == "unit"
    tanh = VAEConfig().with_overrides({"model.output_activation": "tanh", "loss.bce_weight": 0.0,
                                       "loss.mse_weight": 1.0})
    assert not tanh.recon_is_logits and tanh.model.input_range == "symmetric"


@pytest.mark.parametrize("key", ["model.dropout", "train.learning_rate", "loss.kl_weight",
                                 "score.smooth_sigma"])
@pytest.mark.parametrize("value", ["x", None, [1], True])
def test_a_non_number_where_a_number_belongs_is_a_config_error_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"^{key}=.* is invalid; allowed: a number in "):
        VAEConfig().with_overrides({key: value})
