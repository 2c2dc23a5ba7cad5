"""Synthetic defect injection: exact masks, every kind, determinism."""

import numpy as np
import pytest

from vae.data.defects import KINDS, defect, inject, measure
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


def test_matched_defects_take_real_areas_and_contrasts_and_keep_exact_masks():
    images = _patches(60, 64)
    # "Real" defects: small, faint blobs (what AITEX's masks look like next to the built-ins).
    real = images[:20].copy()
    real_masks = np.zeros((20, 64, 64), bool)
    for i in range(20):
        y, x = 10 + i, 5 + 2 * i
        real_masks[i, y:y + 3, x:x + 4 + i % 3] = True
        real[i, 0][real_masks[i]] = np.clip(real[i, 0][real_masks[i]].astype(int) - 12, 0, 255)
    statistics = measure(real, real_masks)
    assert statistics is not None and len(statistics.areas) == 20
    assert set(statistics.areas.tolist()) == {12, 15, 18}
    builtin, builtin_masks, _ = inject(images[20:], seed=3)
    out, masks, _ = inject(images[20:], seed=3, statistics=statistics)
    assert np.array_equal(inject(images[20:], seed=3, statistics=statistics)[0], out)
    changed = (out != images[20:]).any(axis=1)
    assert not (changed & ~masks).any()  # still exact
    areas, generated = masks.reshape(40, -1).sum(1), builtin_masks.reshape(40, -1).sum(1)
    # a built-in shape is cut down to a real area; one already smaller stays whole
    assert all(a in (12, 15, 18) or a == g for a, g in zip(areas, generated, strict=True))
    assert (areas <= generated).all() and (areas < generated).mean() > 0.9
    matched = measure(out, masks)
    assert np.median(matched.contrasts) == pytest.approx(np.median(statistics.contrasts), rel=0.35)
    assert np.median(matched.contrasts) < 0.5 * np.median(measure(builtin, builtin_masks).contrasts)
    assert measure(images[:2], np.zeros((2, 64, 64), bool)) is None  # nothing to match


def test_validation_defects_follow_the_real_validation_strips_when_asked(tmp_path):
    from tests.support.aitex_fixture import PATCH, write_aitex_fixture
    from vae.data import DataConfig, load_splits

    root = write_aitex_fixture(tmp_path / "aitex")
    base = dict(format="aitex", root=str(root), patch_size=PATCH, cache=False)
    builtin = load_splits(DataConfig(**base)).val
    matched = load_splits(DataConfig(**base, val_defects="matched")).val
    real = load_splits(DataConfig(**base)).real_val
    real_areas = set(real.defect_pixels[real.labels == 1].tolist())
    synthetic = matched.synthetic
    assert np.array_equal(matched.images[~synthetic], builtin.images[~synthetic])
    assert set(matched.defect_pixels[synthetic].tolist()) <= real_areas | set(
        builtin.defect_pixels[synthetic].tolist())
    assert matched.defect_pixels[synthetic].sum() < builtin.defect_pixels[synthetic].sum()
    with pytest.raises(ValueError, match=r"data.val_defects='real' is invalid; choose one of"):
        DataConfig(**base, val_defects="real")
