"""train_epoch: weights move, loss falls, NaN is refused and stops every later step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vae import keys
from vae.config import VAEConfig
from vae.model import build_model
from vae.train import (
    NonFiniteLossError,
    autocast_dtype,
    make_optimizer,
    select_device,
    train_epoch,
)

CPU = torch.device("cpu")


def _config(**overrides) -> VAEConfig:
    base = {"model.image_size": 32, "model.latent_dim": 8, "train.batch_size": 4,
            "train.learning_rate": 3e-3}
    return VAEConfig().with_overrides({**base, **overrides})


def _images(count: int = 8, size: int = 32) -> np.ndarray:
    """Striped fabric-like uint8 patches: something a VAE can learn in a few steps."""
    rng = np.random.default_rng(0)
    stripes = (np.arange(size) % 4 < 2).astype(np.float64) * 120 + 60
    images = stripes[None, None, :, None] + rng.normal(0, 8, (count, 1, size, size))
    return images.clip(0, 255).astype(np.uint8)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_train_epoch_returns_all_metrics_and_changes_weights():
    config = _config()
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = make_optimizer(model, config.train)
    before = _snapshot(model)
    metrics = train_epoch(model, optimizer, _images(), config, CPU)
    # fft's weight is 0: not reported as a flat 0; the per-image sums are named as such
    assert set(metrics) == {keys.TRAIN_LOSS, keys.TRAIN_MSE, keys.TRAIN_BCE, keys.TRAIN_KL,
                            keys.TRAIN_IMAGES_PER_S, keys.TRAIN_EPOCH_TIME_S}
    assert (keys.TRAIN_MSE, keys.TRAIN_BCE) == ("train/mse_sum", "train/bce_sum")
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics[keys.TRAIN_BCE] > 0
    assert metrics[keys.TRAIN_IMAGES_PER_S] == pytest.approx(8 / metrics[keys.TRAIN_EPOCH_TIME_S])
    after = model.state_dict()
    for name in ("encoder.0.weight", "head.fc_mu.weight", "head.fc_logvar.bias", "fc_dec.weight",
                 "decoder.3.weight", "decoder.3.bias"):
        assert not torch.equal(before[name], after[name]), name


def test_loss_decreases_over_a_few_steps_on_a_fixed_batch():
    config = _config(**{"train.batch_size": 8, "model.dropout": 0.0})
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = make_optimizer(model, config.train)
    losses = [train_epoch(model, optimizer, _images(), config, CPU, epoch=e)[keys.TRAIN_LOSS]
              for e in range(6)]
    assert losses[-1] < 0.97 * losses[0], losses


def test_training_is_reproducible_from_the_seed():
    def run(seed: int) -> dict[str, float]:
        config = _config(**{"train.seed": seed, "train.precision": "off"})
        torch.manual_seed(123)  # same init; the seed only drives order, dropout and z
        model = build_model(config)
        metrics = train_epoch(model, make_optimizer(model, config.train), _images(), config, CPU)
        return {k: v for k, v in metrics.items() if k.startswith("train/") and "_s" not in k}

    assert run(1) == run(1)
    assert run(1) != run(2)


def _adam_steps(optimizer) -> set[int]:
    return {int(state["step"]) for state in optimizer.state.values()}


def test_a_nan_raises_non_finite_loss_error_without_updating_weights():
    config = _config()
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = make_optimizer(model, config.train)
    with torch.no_grad():
        model.fc_dec.bias[0] = float("nan")
    before = _snapshot(model)
    with pytest.raises(NonFiniteLossError, match=r"non-finite \w+=nan at epoch 3, step 0") as err:
        train_epoch(model, optimizer, _images(), config, CPU, epoch=3)
    assert err.value.epoch == 3 and err.value.step == 0 and err.value.term in ("loss", "mse", "bce")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name], ) or name == "fc_dec.bias", name
    assert not any(p.grad is not None for p in model.parameters())  # no stale NaN gradients
    assert _adam_steps(optimizer) <= {0}  # neither step 0 nor the one after it was taken


def test_a_nan_mid_epoch_names_its_step_and_skips_every_later_one():
    """The check runs on the device (no sync per step): the first bad step and all after it
    are skipped, the ones before it stand, and the error names the first."""
    config = _config(**{"train.precision": "off"})
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = make_optimizer(model, config.train)
    calls = []

    def poison_the_second_batch(module, inputs):  # steps 2 and 3 are healthy again
        calls.append(len(calls))
        return (inputs[0] * float("nan"),) if len(calls) == 2 else None

    model.fc_dec.register_forward_pre_hook(poison_the_second_batch)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 0, step 1") as err:
        train_epoch(model, optimizer, _images(count=16), config, CPU)  # 4 steps of 4
    assert len(calls) == 4 and err.value.step == 1
    assert _adam_steps(optimizer) == {1}  # only step 0 moved the weights, not 2 or 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_precision_and_device_choices():
    assert autocast_dtype("off", CPU) is None
    assert autocast_dtype("bf16", CPU) == torch.bfloat16
    assert autocast_dtype("auto", CPU) in (None, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        autocast_dtype("fp8", CPU)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device().type == expected


def test_weight_decay_selects_adamw_and_images_must_be_uint8():
    config = _config(**{"train.weight_decay": 0.01})
    model = build_model(config)
    optimizer = make_optimizer(model, config.train)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert type(make_optimizer(model, _config().train)) is torch.optim.Adam
    with pytest.raises(ValueError, match="expected uint8 images"):
        train_epoch(model, optimizer, _images().astype(np.float32), config, CPU)


@pytest.mark.parametrize("covariance", ["full", "lowrank"])
def test_nan_in_a_structured_posterior_is_a_non_finite_loss(covariance):
    config = _config(**{"model.covariance": covariance, "model.rank": 2})
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        model.head.fc_logvar.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        train_epoch(model, make_optimizer(model, config.train), _images(), config, CPU)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cuda_takes_bf16_only_where_it_is_native(monkeypatch, native):
    """T4/V100-class GPUs emulate bf16 (slower than fp32): "auto" must not pick it there.
    Their answer cannot be caused on this machine, so torch's query is replaced."""
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native or including_emulation  # an emulating GPU says yes when asked loosely

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    cuda = torch.device("cuda", 0)
    assert autocast_dtype("auto", cuda) == (torch.bfloat16 if native else None)
    assert asked == [False]
    assert autocast_dtype("off", cuda) is None and autocast_dtype("bf16", cuda) == torch.bfloat16
