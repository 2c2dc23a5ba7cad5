"""Denoising training and flips: what the model sees vs what it must reconstruct, and the
separation of the training defects from the validation defects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae.config import ConfigError, VAEConfig
from vae.data import DataConfig, load_splits
from vae.data.corruption import blob_masks, corrupt, flip
from vae.data.defects import inject
from vae.model import build_model
from vae.train import augmentation_generator, make_optimizer, train_epoch, training_pair


def _patches(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=(n, 1, size, size))
    return torch.from_numpy(base.astype(np.uint8))


def test_the_input_differs_from_the_target_exactly_inside_the_masks():
    config = VAEConfig().with_overrides({"train.denoise_probability": 1.0,
                                         "train.flip": "horizontal"})
    batch = _patches()
    noisy, clean, masks = training_pair(batch, config, augmentation_generator(0, 3))
    assert noisy.dtype == clean.dtype == torch.uint8 and masks.shape == (8, 32, 32)
    assert torch.equal((noisy != clean).any(dim=1), masks)
    assert bool(masks.flatten(1).any(dim=1).all())  # probability 1: every patch has a defect
    coverage = masks.float().mean(dim=(1, 2))
    assert float(coverage.max()) <= 0.06  # small, like AITEX defects (COVERAGE tops at 5 %)
    # The clean target is the (flipped) input patch itself: no defect, no other change.
    for original, target in zip(batch, clean, strict=True):
        assert torch.equal(target, original) or torch.equal(target, original.flip(-1))


def test_without_denoising_input_and_target_are_the_same_patch():
    config = VAEConfig()
    batch = _patches()
    noisy, clean, masks = training_pair(batch, config, augmentation_generator(0, 0))
    assert torch.equal(noisy, batch) and torch.equal(clean, batch) and not masks.any()


def test_a_probability_between_zero_and_one_corrupts_about_that_share():
    _, masks = corrupt(_patches(400, 16), 0.3, torch.Generator().manual_seed(1))
    share = float(masks.flatten(1).any(dim=1).float().mean())
    assert 0.22 < share < 0.38


def test_flips_keep_every_patch_and_mirror_about_half():
    batch = _patches(200, 16)
    flipped = flip(batch, "both", torch.Generator().manual_seed(0))
    same = [bool(torch.equal(a, b)) for a, b in zip(batch, flipped, strict=True)]
    assert 0.1 < np.mean(same) < 0.4  # unflipped on both axes: 1/4 expected
    for a, b in zip(batch, flipped, strict=True):
        assert any(torch.equal(b, v) for v in (a, a.flip(-1), a.flip(-2), a.flip(-1).flip(-2)))


def test_the_training_defects_are_another_generator_and_stream_than_validation():
    images = _patches(16, 32).numpy()
    _, val_masks, _ = inject(images, seed=0)
    _, train_masks = corrupt(torch.from_numpy(images), 1.0, augmentation_generator(0, 0))
    assert not np.array_equal(val_masks, train_masks.numpy())
    # Their own stream: new defects every epoch, the same ones when an epoch is replayed.
    def draws(epoch):
        return blob_masks(4, (32, 32), augmentation_generator(0, epoch))
    assert torch.equal(draws(0), draws(0)) and not torch.equal(draws(0), draws(1))


def test_denoising_changes_training_but_not_the_training_data(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path))
    data = DataConfig(patch_size=32)
    before = load_splits(data)
    train_copy = before.train.images.copy()
    losses = {}
    for probability in (0.0, 1.0):
        config = VAEConfig().with_overrides({
            "model.image_size": 32, "train.denoise_probability": probability,
            "loss.mse_weight": 1.0, "loss.bce_weight": 0.0})
        torch.manual_seed(0)
        model = build_model(config)
        optimizer = make_optimizer(model, config.train)
        losses[probability] = train_epoch(model, optimizer, before.train.images[:64], config,
                                          torch.device("cpu"))["train/loss"]
    assert losses[0.0] != losses[1.0], losses
    assert np.array_equal(before.train.images, train_copy)  # corruption works on copies


def test_denoise_and_flip_are_validated():
    with pytest.raises(ConfigError, match=r"train.denoise_probability=1.5 is out of range"):
        VAEConfig().with_overrides({"train.denoise_probability": 1.5})
    with pytest.raises(ConfigError, match=r"train.flip 'rotate'.*\['none', 'horizontal', 'both'\]"):
        VAEConfig().with_overrides({"train.flip": "rotate"})


def test_the_loss_compares_the_reconstruction_with_the_clean_patch(monkeypatch):
    import vae.train as train_module

    config = VAEConfig().with_overrides({
        "model.image_size": 32, "train.denoise_probability": 1.0, "train.batch_size": 8,
        "loss.mse_weight": 1.0, "loss.bce_weight": 0.0})
    images = _patches(8, 32)
    seen: dict[str, torch.Tensor] = {}
    real_loss = train_module.vae_loss

    def spy(output, target, loss_config):  # records what the loss is asked to reconstruct
        seen["target"] = target.detach().clone()
        return real_loss(output, target, loss_config)

    monkeypatch.setattr(train_module, "vae_loss", spy)
    torch.manual_seed(0)
    model = build_model(config)
    model.register_forward_pre_hook(lambda _m, args: seen.__setitem__("input", args[0].clone()))
    train_epoch(model, make_optimizer(model, config.train), images, config, torch.device("cpu"))
    clean = {bytes((p.float() / 255).numpy().tobytes()) for p in images}
    targets = {bytes(t.contiguous().numpy().tobytes()) for t in seen["target"]}
    assert targets <= clean  # every target is one of the unmodified training patches
    assert not torch.equal(seen["input"], seen["target"])  # the model saw the corrupted ones
