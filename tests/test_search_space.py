"""The search space without Ray: coverage, validity by construction, samplers, one training step."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from search.searcher import SpaceSearcher
from search.space import (
    BCE_ACTIVATIONS,
    DEFAULT_LOSS_MIXES,
    Choice,
    Fixed,
    RandInt,
    SearchSpace,
    SpaceError,
    Uniform,
)
from search.space_check import check_space, enumerate_paths, sample_configs
from vae.config import VAEConfig
from vae.model import build_model
from vae.train import make_optimizer, train_epoch

BASE = {"model.image_size": 32, "train.num_epochs": 2}
FIVE_DIMENSIONS = ("model.latent_dim", "model.dropout", "model.output_activation",
                   "loss.mse_weight", "loss.bce_weight", "loss.fft_weight", "model.covariance")


def _mix(config: VAEConfig) -> tuple[float, float, float]:
    return config.loss.mse_weight, config.loss.bce_weight, config.loss.fft_weight


def test_default_space_searches_the_five_dimensions_and_the_optimiser_knobs():
    keys = SearchSpace().searched_keys()
    for key in (*FIVE_DIMENSIONS, "model.rank", "train.learning_rate", "loss.kl_weight",
                "train.batch_size"):
        assert key in keys
    assert check_space(SearchSpace(), BASE) > 100  # every coupled path was built and valid


def test_fifty_sampled_configs_are_valid_and_each_takes_one_training_step():
    configs = sample_configs(SearchSpace(), 50, seed=7, base=BASE)
    seen = collections.defaultdict(set)
    for config in configs:
        if config.loss.bce_weight > 0:
            assert config.model.output_activation in BCE_ACTIVATIONS
        if config.model.covariance == "lowrank":
            assert 1 <= config.model.rank < config.model.latent_dim
        seen["activation"].add(config.model.output_activation)
        seen["covariance"].add(config.model.covariance)
        seen["mix"].add(_mix(config))
        seen["latent"].add(config.model.latent_dim)

        torch.manual_seed(0)
        model = build_model(config)
        optimizer = make_optimizer(model, config.train)
        before = [p.detach().clone() for p in model.parameters()]
        images = torch.randint(0, 256, (config.train.batch_size, 1, 32, 32), dtype=torch.uint8)
        metrics = train_epoch(model, optimizer, images, config, torch.device("cpu"))  # one step
        assert np.isfinite(metrics["train/loss"]), config
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert seen["activation"] == {"sigmoid", "tanh", "relu", "none"}
    assert seen["covariance"] == {"diagonal", "full", "lowrank"}
    assert len(seen["mix"]) == len(DEFAULT_LOSS_MIXES)
    assert len(seen["latent"]) >= 5


@pytest.mark.parametrize("search_alg", ["random", "optuna"])
def test_both_search_algorithms_draw_valid_configs_with_config_keys_only(search_alg):
    def run() -> list[dict]:
        searcher = SpaceSearcher(SearchSpace(), search_alg=search_alg, seed=3, num_samples=24,
                                 metric="val/auroc", mode="max")
        drawn = []
        for i in range(24):
            config = searcher.suggest(f"t{i}")
            drawn.append(config)
            # A made-up objective so that TPE has something to model after its warm-up.
            value = 1.0 - abs(np.log10(config["train.learning_rate"]) + 3.0)
            searcher.on_trial_result(f"t{i}", {"val/auroc": value, "epoch": 1})
            searcher.on_trial_complete(f"t{i}", {"val/auroc": value, "epoch": 1})
        return drawn

    drawn = run()
    valid = set(VAEConfig.valid_keys())
    for config in drawn:
        assert set(config) <= valid, set(config) - valid
        VAEConfig().with_overrides({**BASE, **config})  # raises if invalid
    assert drawn == run()  # seeded: the same search twice draws the same configs


def test_optuna_is_told_nan_trials_failed_so_tpe_never_models_them():
    searcher = SpaceSearcher(SearchSpace(), search_alg="optuna", seed=0, num_samples=10,
                             metric="val/auroc", mode="max")
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_result("a", {"val/auroc": 0.7})
    searcher.on_trial_complete("a", {"val/auroc": float("nan"), "nonfinite": 1})
    searcher.on_trial_complete("b", {"val/auroc": 0.6})
    states = [t.state.name for t in searcher._study.trials]
    assert states == ["FAIL", "COMPLETE"]
    assert searcher._study.best_value == pytest.approx(0.6)


def test_rank_is_drawn_only_for_lowrank_and_capped_below_latent_dim():
    space = SearchSpace().with_overrides({"model.latent_dim": Fixed(4),
                                          "model.covariance": Fixed("lowrank")})
    ranks = {c.model.rank for c in sample_configs(space, 40, seed=1, base=BASE)}
    assert ranks <= {1, 2, 3} and len(ranks) > 1
    diagonal = SearchSpace().with_overrides({"model.covariance": Fixed("diagonal")})
    assert all("model.rank" not in v for v in
               enumerate_paths(diagonal.define, lambda name: name == "model.latent_dim"))


def test_user_loss_weights_replace_the_mix_and_default_activation_adapts():
    space = SearchSpace().with_overrides({"loss.bce_weight": Fixed(1.0),
                                          "loss.fft_weight": Uniform(0.01, 0.1, log=True)})
    check_space(space, BASE)
    configs = sample_configs(space, 30, seed=2, base=BASE)
    assert {c.model.output_activation for c in configs} == {"sigmoid", "none"}
    assert all(c.loss.mse_weight == 0.0 and 0.01 <= c.loss.fft_weight <= 0.1 for c in configs)


@pytest.mark.parametrize("overrides, message", [
    ({"loss.bce_weight": Fixed(1.0), "model.output_activation": Choice(("sigmoid", "tanh"))},
     "model.output_activation='tanh'"),
    ({"model.covariance": Fixed("lowrank"), "model.rank": RandInt(1, 16),
      "model.latent_dim": Choice((8, 32))}, "model.rank=16 must be < model.latent_dim=8"),
    ({"loss.mse_weight": Uniform(0.0, 1.0)}, "are all 0"),
    ({"model.dropout": Uniform(0.0, 1.0)}, "'model.dropout'"),
])
def test_a_space_that_can_draw_an_invalid_combination_fails_the_check(overrides, message):
    with pytest.raises(SpaceError, match="invalid") as error:
        check_space(SearchSpace().with_overrides(overrides), BASE)
    assert message in str(error.value)


def test_the_embedded_default_draws_trials_that_cover_the_five_dimensions():
    from search.settings import SearchSettings

    settings = SearchSettings()
    assert settings.num_samples >= 8
    searcher = SpaceSearcher(SearchSpace(), search_alg=settings.search_alg, seed=settings.seed,
                             num_samples=settings.num_samples, metric="val/auroc", mode="max")
    drawn = [searcher.suggest(str(i)) for i in range(settings.num_samples)]
    for key in ("model.latent_dim", "model.dropout", "model.output_activation",
                "model.covariance"):
        assert len({d[key] for d in drawn}) >= 2, key
    mixes = {(d["loss.mse_weight"], d["loss.bce_weight"], d["loss.fft_weight"]) for d in drawn}
    assert len(mixes) >= 3  # pure and mixed loss settings
    assert {d["model.covariance"] for d in drawn} == {"diagonal", "full", "lowrank"}
