"""Patch positions, cutting and labelling."""

import numpy as np
import pytest

from vae.data.patches import cut, labels_from_masks, positions


def test_positions_cover_an_aitex_3796_strip_with_a_right_aligned_last_patch():
    xs = positions(3796, 256, 256)
    assert xs.tolist() == list(range(0, 3329, 256)) + [3540]
    assert positions(4096, 256, 256).tolist() == list(range(0, 3841, 256))  # 16, no extra
    assert positions(256, 256, 256).tolist() == [0]
    assert positions(100, 32, 24).tolist() == [0, 24, 48, 68]


def test_positions_reject_a_strip_smaller_than_a_patch():
    with pytest.raises(ValueError, match="length 20 is smaller than patch_size 32"):
        positions(20, 32, 32)


def test_cut_matches_direct_slicing_in_row_major_order():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 40, 70), dtype=np.uint8)
    mask = rng.random((40, 70)) > 0.9
    patches, masks, xs, ys = cut(image, mask, 32, 16)
    assert xs.tolist() == [0, 16, 32, 38] * 2 and ys.tolist() == [0] * 4 + [8] * 4
    for p, m, x, y in zip(patches, masks, xs, ys, strict=True):
        assert np.array_equal(p, image[:, y:y + 32, x:x + 32])
        assert np.array_equal(m, mask[y:y + 32, x:x + 32])


def test_labels_follow_the_minimum_defect_area():
    counts = np.array([0, 1, 4, 5, 100])
    assert labels_from_masks(counts, 1).tolist() == [0, 1, 1, 1, 1]
    assert labels_from_masks(counts, 5).tolist() == [0, 0, 0, 1, 1]
