"""Anomaly maps and patch scores, against stand-in "models" whose reconstruction is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from tests.support.standins import StandIn
from vae.config import LossConfig, ModelConfig, ScoreConfig, VAEConfig
from vae.score import anomaly_maps, patch_scores, score_patches
from vae.score.blur import gaussian_blur


class ConstantModel(StandIn):
    """reconstruct(x) = a constant grey in the model's range (0.5 in [0, 1] units)."""

    def __init__(self, activation: str = "sigmoid", channels: int = 1, level: float = 0.5):
        super().__init__()
        self.config = VAEConfig(model=ModelConfig(image_size=32, in_channels=channels,
                                                  output_activation=activation),
                                loss=LossConfig(mse_weight=1.0, bce_weight=0.0))
        self.level = level
        self.dropout = nn.Dropout(0.9)  # would scramble outputs if scoring left train mode on
        self.scale = nn.Parameter(torch.ones(()))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        grey = torch.full_like(x, self.level) * self.scale
        grey = self.dropout(grey)
        return grey * 2 - 1 if self.config.model.input_range == "symmetric" else grey


def _images(n=5, channels=1, size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, channels, size, size), dtype=np.uint8)


@pytest.mark.parametrize("method", ["l1", "l2"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_maps_are_residuals_in_unit_scale_whatever_the_model_range(method, activation):
    images = _images(channels=3)
    model = ConstantModel(activation, channels=3)
    maps = anomaly_maps(model, images, score_config=ScoreConfig(map=method), batch_size=2)
    diff = images.astype(np.float64) / 255 - 0.5
    expected = (np.abs(diff) if method == "l1" else diff**2).mean(axis=1)
    assert maps.shape == (5, 32, 32) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, expected, atol=1e-6)


@pytest.mark.parametrize(("size", "sigma"), [(40, 1.5), (32, 2.0), (144, 5.0)])
def test_smoothed_map_equals_scipy_gaussian_filter(size, sigma):
    # sizes below, at and above one blur block, not multiples of it; a halo wider than 8
    images = _images(n=3, size=size)
    model = ConstantModel()
    config = ScoreConfig(map="l2_smooth", smooth_sigma=sigma)
    maps = anomaly_maps(model, images, score_config=config)
    raw = ((images[:, 0].astype(np.float64) / 255 - 0.5) ** 2)
    # replicate padding == scipy's "nearest"; the radius is ceil(4 sigma) as scipy's truncate=4
    expected = np.stack([ndimage.gaussian_filter(m, sigma, mode="nearest", truncate=4.0)
                         for m in raw])
    np.testing.assert_allclose(maps, expected, atol=1e-6)
    assert maps.std() < raw.std() * 0.6  # the blur really smooths


def test_blur_of_non_square_maps_and_sigma_zero():
    maps = torch.rand(2, 8, 300, dtype=torch.float64)  # wider than a full matrix: blockwise
    expected = np.stack([ndimage.gaussian_filter(m, 3.0, mode="nearest") for m in maps.numpy()])
    np.testing.assert_allclose(gaussian_blur(maps, 3.0).numpy(), expected, atol=1e-12)
    assert torch.equal(gaussian_blur(maps, 0.0), maps)


@pytest.mark.parametrize("reduction", ["max", "mean", "topk_mean"])
def test_patch_scores_reductions(reduction):
    rng = np.random.default_rng(1)
    maps = rng.random((4, 10, 10)).astype(np.float32)
    config = ScoreConfig(reduction=reduction, topk_fraction=0.05)
    scores = patch_scores(maps, config)
    flat = np.sort(maps.reshape(4, -1), axis=1)
    expected = {"max": flat[:, -1], "mean": flat.mean(axis=1),
                "topk_mean": flat[:, -5:].mean(axis=1)}[reduction]
    assert scores.shape == (4,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_topk_uses_at_least_one_pixel():
    maps = np.zeros((1, 10, 10), np.float32)
    maps[0, 3, 3] = 7.0
    assert patch_scores(maps, ScoreConfig(reduction="topk_mean", topk_fraction=1e-6))[0] == 7.0


def test_score_patches_default_config_batches_and_mode():
    images = _images(n=7)
    model = ConstantModel()
    model.train()
    scores, maps = score_patches(model, images, batch_size=3)
    assert model.training  # the caller's mode is restored
    again, _ = score_patches(model, images, batch_size=64)
    np.testing.assert_array_equal(scores, again)  # deterministic (dropout off), batch-independent
    np.testing.assert_allclose(scores, patch_scores(maps, model.config.score), rtol=1e-6)
    assert scores.shape == (7,) and maps.shape == (7, 32, 32)
    only_scores, no_maps = score_patches(model, images, keep_maps=False)
    assert no_maps is None
    np.testing.assert_array_equal(only_scores, scores)


def test_anomalous_pixels_score_higher():
    images = np.full((2, 1, 32, 32), 128, np.uint8)
    images[1, 0, 10:14, 10:14] = 255
    scores, maps = score_patches(ConstantModel(), images)
    assert scores[1] > scores[0] * 100
    assert np.unravel_index(maps[1].argmax(), maps[1].shape) in {(11, 11), (11, 12), (12, 11),
                                                                 (12, 12)}


def test_gray_patches_without_channel_axis_and_empty_input():
    images = _images(n=2)
    np.testing.assert_array_equal(anomaly_maps(ConstantModel(), images[:, 0]),
                                  anomaly_maps(ConstantModel(), images))
    scores, maps = score_patches(ConstantModel(), images[:0])
    assert scores.shape == (0,) and maps.shape == (0, 32, 32)


def test_bad_inputs_raise_clear_errors():
    model = ConstantModel(channels=1)
    with pytest.raises(ValueError, match="3 channel.*trained on 1"):
        anomaly_maps(model, _images(channels=3))
    with pytest.raises(TypeError, match="uint8"):
        anomaly_maps(model, _images().astype(np.float32))
    with pytest.raises(ValueError, match="batch_size=0"):
        anomaly_maps(model, _images(), batch_size=0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        patch_scores(np.zeros((3, 3), np.float32), ScoreConfig())
