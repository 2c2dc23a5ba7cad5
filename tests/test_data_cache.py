"""The patch cache: a hit decodes no PNG; a changed source or setting rebuilds it."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.aitex_fixture import PATCH, save, texture, write_aitex_fixture
from vae.data import DataConfig, load_catalog, load_splits
from vae.data.cache import save as save_entry


@pytest.fixture
def aitex(tmp_path) -> Path:
    return write_aitex_fixture(tmp_path / "aitex")


@pytest.fixture
def opens(monkeypatch):
    """Counts every image Pillow opens (decoding starts with ``Image.open``)."""
    calls = []
    original = Image.open

    def counting_open(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return calls


def _config(root: Path, cache_dir: Path, **changes) -> DataConfig:
    return DataConfig(format="aitex", root=str(root), patch_size=PATCH, cache_dir=str(cache_dir),
                      **changes)


def test_second_load_is_a_hit_without_decoding(aitex, tmp_path, opens):
    config = _config(aitex, tmp_path / "cache")
    first, summary = load_catalog(config)
    assert len(opens) > 20 and summary.cache["hit"] is False
    opens.clear()
    second, summary2 = load_catalog(config)
    assert opens == []
    assert summary2.cache == {"hit": True, "path": summary.cache["path"]}
    for name in ("images", "masks", "labels", "x", "y", "strip_index", "defect_pixels"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.strips == second.strips
    assert summary2.skipped == summary.skipped and summary2.notes == summary.notes
    assert sorted(p.name for p in Path(summary.cache["path"]).iterdir()) == sorted(
        ["images.npy", "x.npy", "y.npy", "strip_index.npy", "defect_pixels.npy",
         "mask_rows.npy", "masks.npy", "meta.json"])


def test_splits_from_the_cache_equal_splits_from_decoding(aitex, tmp_path):
    cached = [load_splits(_config(aitex, tmp_path / "cache")) for _ in range(2)]
    fresh = load_splits(_config(aitex, tmp_path / "unused", cache=False))
    assert cached[1].summary.cache["hit"] and not fresh.summary.cache["hit"]
    for name in ("train", "val", "test"):
        for s in (cached[0], cached[1]):
            assert np.array_equal(getattr(s, name).images, getattr(fresh, name).images)
            assert np.array_equal(getattr(s, name).masks, getattr(fresh, name).masks)


@pytest.mark.parametrize("change", ["mtime", "rewrite", "add", "remove"])
def test_a_changed_source_rebuilds_and_drops_the_stale_entry(aitex, tmp_path, opens, change):
    config = _config(aitex, tmp_path / "cache")
    _, before = load_catalog(config)
    target = aitex / "NODefect_images/roll_a/0001_000_00.png"
    if change == "mtime":
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    elif change == "rewrite":
        save(texture(np.random.default_rng(9)), target)
    elif change == "add":
        save(texture(np.random.default_rng(9)), aitex / "NODefect_images/roll_a/0050_000_00.png")
    else:
        target.unlink()
    opens.clear()
    catalog, after = load_catalog(config)
    assert after.cache["hit"] is False and len(opens) > 20
    assert after.cache["path"] != before.cache["path"]
    assert not Path(before.cache["path"]).exists()
    expected = {"add": 17 + 1, "remove": 17 - 1}.get(change, 17)
    assert after.strips["normal"] == expected
    opens.clear()
    assert load_catalog(config)[1].cache["hit"] and opens == []


def test_patch_settings_key_the_cache_but_labels_do_not(aitex, tmp_path, opens):
    load_catalog(_config(aitex, tmp_path / "cache"))
    opens.clear()
    catalog, summary = load_catalog(_config(aitex, tmp_path / "cache", min_defect_pixels=30))
    assert summary.cache["hit"] and opens == []
    assert catalog.labels.sum() == 2  # only the two 40-pixel defect patches stay anomalous
    _, other = load_catalog(_config(aitex, tmp_path / "cache", stride=16))
    assert other.cache["hit"] is False and len(opens) > 0
    assert len(list((tmp_path / "cache").iterdir())) == 2  # both settings kept


def test_a_damaged_entry_is_rebuilt(aitex, tmp_path):
    config = _config(aitex, tmp_path / "cache")
    _, summary = load_catalog(config)
    Path(summary.cache["path"], "images.npy").write_bytes(b"garbage")
    catalog, again = load_catalog(config)
    assert again.cache["hit"] is False and len(catalog) == 176


def test_a_lost_rename_race_keeps_the_winner(aitex, tmp_path):
    config = _config(aitex, tmp_path / "cache")
    catalog, summary = load_catalog(config)
    entry = Path(summary.cache["path"])
    marker = (entry / "meta.json").stat().st_mtime_ns
    save_entry(entry, catalog, summary)  # a second writer finishing later
    assert (entry / "meta.json").stat().st_mtime_ns == marker
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # its temp dir is gone


def test_cache_disabled_writes_nothing(aitex, tmp_path):
    load_catalog(_config(aitex, tmp_path / "cache", cache=False))
    assert not (tmp_path / "cache").exists()
