"""Synthetic defect injection: exact masks, every kind, determinism."""

import numpy as np
import pytest

from vae.data.defects import KINDS, defect, inject
from vae.data.fabrics import FABRICS, render, to_uint8


def _patches(n: int, size: int = 64, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(5)
    gray = np.stack([to_uint8(render(FABRICS[i % 7], size, size, rng)) for i in range(n)])
    return np.repeat(gray[:, None], channels, axis=1)


@pytest.mark.parametrize("size", [64, 256])
def test_injected_masks_are_exact(size):
    images = _patches(40, size)
    out, masks, kinds = inject(images, seed=3)
    changed = (out != images).any(axis=1)
    assert not (changed & ~masks).any()  # nothing outside the mask moves
    assert masks.reshape(40, -1).sum(1).min() >= 4
    moved = np.abs(out.astype(int) - images.astype(int)).max(axis=1)
    assert (moved[masks] >= 10).mean() > 0.95  # and the defect is visible inside it
    assert {k for k in kinds} == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_has_alpha_at_least_half_inside_and_zero_outside(kind):
    gray = _patches(1, 128)[0, 0].astype(np.float32)
    alpha, target, name = defect(gray, np.random.default_rng(0), kind)
    assert name == kind and alpha.shape == target.shape == gray.shape
    inside = alpha > 0
    assert inside.any() and alpha[inside].min() >= 0.5 and alpha.max() <= 1.0


def test_injection_is_deterministic_and_leaves_the_input_alone():
    images = _patches(6, 64, channels=3)
    before = images.copy()
    a, ma, ka = inject(images, seed=1, defects_per_patch=2)
    b, mb, kb = inject(images, seed=1, defects_per_patch=2)
    c, _, _ = inject(images, seed=2, defects_per_patch=2)
    assert np.array_equal(a, b) and np.array_equal(ma, mb) and ka == kb
    assert not np.array_equal(a, c)
    assert np.array_equal(images, before)
    assert all(k.count("+") == 1 for k in ka)
    assert np.array_equal(a[:, 0] - images[:, 0], a[:, 2] - images[:, 2])  # same on all channels


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown defect kind 'scratch'; choose one of"):
        defect(np.zeros((32, 32), np.float32), np.random.default_rng(0), "scratch")
