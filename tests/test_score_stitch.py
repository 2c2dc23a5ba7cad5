"""Stitching patch maps back into strips: exact for identity and for the overlapping last patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.standins import StandIn
from vae.config import LossConfig, ModelConfig, ScoreConfig, VAEConfig
from vae.score import anomaly_maps, stitch


class BlackModel(StandIn):
    """reconstruct(x) = 0, so the l1 map of a patch is the patch itself in [0, 1] units."""

    def __init__(self):
        super().__init__()
        self.config = VAEConfig(model=ModelConfig(image_size=32),
                                loss=LossConfig(mse_weight=1.0, bce_weight=0.0))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def _cut(strip: np.ndarray, patch: int, stride: int) -> tuple[np.ndarray, list[int], list[int]]:
    """Patches left to right; the last one shifted to end at the edge (AITEX's 3796-wide strip)."""
    height, width = strip.shape
    xs = list(range(0, width - patch + 1, stride))
    if xs[-1] + patch < width:
        xs.append(width - patch)
    ys = list(range(0, height - patch + 1, stride))
    pos = [(x, y) for y in ys for x in xs]
    patches = np.stack([strip[y:y + patch, x:x + patch] for x, y in pos])[:, None]
    return patches, [p[0] for p in pos], [p[1] for p in pos]


@pytest.mark.parametrize(("width", "stride"), [(256, 32), (232, 32), (256, 16)],
                         ids=["non-overlapping", "last-patch-overlaps", "stride-half"])
def test_identity_stitching_reproduces_the_strip_exactly(width, stride):
    strip = np.random.default_rng(0).integers(0, 256, (32, width), dtype=np.uint8)
    patches, xs, ys = _cut(strip, 32, stride)
    np.testing.assert_array_equal(stitch(patches[:, 0], xs, ys, strip.shape), strip)
    maps = anomaly_maps(BlackModel(), patches, score_config=ScoreConfig(map="l1"))
    stitched = stitch(maps, xs, ys, strip.shape)
    assert stitched.shape == strip.shape and stitched.dtype == np.float32
    np.testing.assert_array_equal(stitched, strip.astype(np.float32) / 255)


def test_overlaps_are_averaged_and_uncovered_pixels_are_nan():
    maps = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)]).astype(np.float32)
    out = stitch(maps, [0, 1], [0, 0], (2, 5))
    np.testing.assert_array_equal(out[:, :3], [[1, 2, 3], [1, 2, 3]])
    assert np.isnan(out[:, 3:]).all()
    assert (stitch(maps, [0, 1], [0, 0], (2, 5), fill=0.0)[:, 3:] == 0).all()


def test_patch_outside_the_strip_is_rejected():
    with pytest.raises(ValueError, match="x=4, y=0 lies outside the 2×5 strip"):
        stitch(np.zeros((1, 2, 2)), [4], [0], (2, 5))
    with pytest.raises(ValueError, match="one x and one y per map"):
        stitch(np.zeros((2, 2, 2)), [0], [0], (2, 5))
