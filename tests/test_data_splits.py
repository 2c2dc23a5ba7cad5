"""Splits by strip: disjoint, deterministic by seed, 3:1 per fabric, validation composition."""

from pathlib import Path

import numpy as np
import pytest

from tests.support.aitex_fixture import PATCH, write_aitex_fixture
from vae.data import DataConfig, load_splits


@pytest.fixture(scope="module")
def aitex(tmp_path_factory) -> Path:
    return write_aitex_fixture(tmp_path_factory.mktemp("aitex"))


def _splits(root: Path, **changes):
    return load_splits(DataConfig(format="aitex", root=str(root), patch_size=PATCH, cache=False,
                                  **changes))


def test_splits_are_disjoint_by_strip_and_cover_every_strip(aitex):
    splits = _splits(aitex)
    names = ("train", "val", "real_val", "test")
    strips = {name: set(getattr(splits, name).strip) for name in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not strips[a] & strips[b], (a, b)
    assert len(set().union(*strips.values())) == 22


def test_real_validation_holds_out_defective_strips_per_fabric_and_moves_nothing_else(aitex):
    splits, without = _splits(aitex), _splits(aitex, real_val_fraction=0.0)
    real = splits.real_val
    # fabric 00 has 4 defective strips → round(4 x 0.25) = 1 held out; fabric 01 has 1 → 0
    # (every fabric keeps at least one defective strip in test).
    held = {real.strips[i].strip for i in set(real.strip_index.tolist())}
    assert len(held) == 1 and all(s.startswith("Defect_images/") for s in held)
    assert {real.strips[i].fabric for i in set(real.strip_index.tolist())} == {"00"}
    assert splits.has_real_val and not without.has_real_val and len(without.real_val) == 0
    assert (real.labels == (real.defect_pixels > 0)).all() and not real.synthetic.any()
    assert 0 < real.labels.sum() < len(real)  # real defects against clean patches of the strip
    for name in ("train", "val"):
        assert np.array_equal(getattr(splits, name).images, getattr(without, name).images)
    assert set(without.test.strip) == set(splits.test.strip) | held
    assert splits.summary.splits["real_val"]["strips"] == 1
    assert "real_val" not in without.summary.splits
    other_seed = _splits(aitex, seed=5).real_val
    assert len(other_seed) and set(other_seed.strip) <= set(without.test.strip)
    with pytest.raises(ValueError, match=r"data.real_val_fraction=1.0 is out of range"):
        _splits(aitex, real_val_fraction=1.0)


def test_three_to_one_per_fabric_with_a_validation_slice(aitex):
    splits = _splits(aitex, real_val_fraction=0.0)
    # fabric 00: 8 normal → 2 test, 6 left → 1 val, 5 train; fabric 01: 9 → 2, 1, 6.
    train_fabrics = [splits.train.strips[i].fabric for i in set(splits.train.strip_index.tolist())]
    assert sorted(train_fabrics) == ["00"] * 5 + ["01"] * 6
    assert splits.summary.splits["train"] == {"strips": 11, "patches": 88, "anomalous": 0,
                                              "synthetic": 0}
    assert splits.summary.splits["val"]["strips"] == 2
    assert splits.summary.splits["test"]["strips"] == 4 + 5
    assert splits.train.labels.sum() == 0 and not splits.train.synthetic.any()


def test_test_holds_remaining_normals_and_every_defective_strip(aitex):
    splits = _splits(aitex, real_val_fraction=0.0)
    test = splits.test
    defective = {s.strip for s in test.strips if s.defective}
    assert defective <= set(test.strip)
    assert test.labels.sum() == 7
    assert (test.labels == (test.defect_pixels > 0)).all()


def test_validation_is_held_out_normals_plus_the_same_patches_with_defects(aitex):
    val = _splits(aitex).val
    n = len(val) // 2
    assert len(val) == 2 * 16
    assert val.labels[:n].sum() == 0 and val.labels[n:].tolist() == [1] * n
    assert not val.synthetic[:n].any() and val.synthetic[n:].all()
    assert np.array_equal(val.strip[:n], val.strip[n:])
    assert np.array_equal(val.x[:n], val.x[n:])
    assert not val.masks[:n].any() and all(m.any() for m in val.masks[n:])
    changed = (val.images[:n] != val.images[n:]).any(axis=1)
    assert not (changed & ~val.masks[n:]).any()


def test_same_seed_same_split_other_seed_other_split(aitex):
    a, b, c = _splits(aitex, seed=0), _splits(aitex, seed=0), _splits(aitex, seed=1)
    assert np.array_equal(a.train.strip, b.train.strip)
    assert np.array_equal(a.val.images, b.val.images)
    assert set(a.test.strip) != set(c.test.strip) or set(a.val.strip) != set(c.val.strip)


def test_patchset_helpers(aitex):
    test = _splits(aitex, real_val_fraction=0.0).test
    normal = test.normal()
    assert len(normal) == len(test) - 7 and normal.labels.sum() == 0
    sub = test.subset([3, 1])
    assert len(sub) == 2 and sub.x.tolist() == [test.x[3], test.x[1]]
    assert sub.strips is test.strips
    assert test.strip_shape(test.strip[0]) == (32, 256)


def test_splits_pickle_for_the_object_store(aitex):
    import pickle

    splits = _splits(aitex)
    copy = pickle.loads(pickle.dumps(splits))
    assert np.array_equal(copy.val.images, splits.val.images)
    assert copy.test.strips == splits.test.strips and copy.summary == splits.summary
