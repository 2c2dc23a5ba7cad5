"""The synthetic AITEX-layout generator and the embedded default set."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae.data import (
    DataConfig,
    default_synthetic_root,
    ensure_synthetic,
    generate_synthetic,
    load_catalog,
    load_splits,
)
from vae.data.synth import FULL, SMALL


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "set", seed=0)


def test_small_set_has_the_aitex_layout_and_counts(small):
    normals = sorted((small / "NODefect_images").rglob("*.png"))
    defects = sorted((small / "Defect_images").glob("*.png"))
    masks = sorted((small / "Mask_images").glob("*.png"))
    assert len(normals) == 40 and len(defects) == 16 and len(masks) == 16
    assert len({p.parent.name for p in normals}) == 4  # one roll folder per fabric
    assert [m.name for m in masks] == [d.stem + "_mask.png" for d in defects]
    assert all(p.stem.split("_")[1] == "000" for p in normals)
    assert all(p.stem.split("_")[1] != "000" for p in defects)
    with Image.open(defects[0]) as image:
        assert (image.mode, image.size) == ("L", (1024, 64))
    manifest = json.loads((small / "synthetic.json").read_text())
    assert manifest["strip_shape"] == [64, 1024] and manifest["defective_strips"] == 16


def test_masks_are_soft_edged_and_threshold_to_the_defect(small):
    for path in sorted((small / "Mask_images").glob("*.png")):
        mask = np.asarray(Image.open(path))
        assert (mask == 255).any() and ((mask > 0) & (mask < 128)).any()
        assert not ((mask >= 128) & (mask < 255)).any()


def test_reader_uses_every_file_and_finds_the_defects(small, tmp_path):
    catalog, summary = load_catalog(DataConfig(format="aitex", root=str(small), patch_size=64,
                                               cache=False))
    assert summary.skipped == [] and summary.notes == []
    assert len(catalog) == 56 * 16
    per_strip = np.bincount(catalog.strip_index, weights=catalog.labels)
    defective = np.array([s.defective for s in catalog.strips])
    assert (per_strip[defective] >= 1).all() and (per_strip[~defective] == 0).all()


def test_fabrics_differ_in_brightness_and_weave(small):
    stats = []
    for roll in sorted((small / "NODefect_images").iterdir()):
        image = np.asarray(Image.open(next(roll.glob("*.png"))), dtype=np.float64)
        spectrum = np.abs(np.fft.rfft(image - image.mean(), axis=1)).mean(0)
        stats.append((round(image.mean()), int(spectrum[8:].argmax()) + 8))
    assert len({s[0] // 10 for s in stats}) == 4  # distinct brightness
    assert len({s[1] for s in stats}) >= 3  # distinct dominant weave frequency


def test_deterministic_by_seed(small, tmp_path):
    again = generate_synthetic(tmp_path / "again", seed=0)
    other = generate_synthetic(tmp_path / "other", seed=1)
    assert _digest(again) == _digest(small) != _digest(other)


def test_refuses_a_non_empty_output_directory(small):
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        generate_synthetic(small)


def test_full_size_matches_aitex():
    assert (FULL.fabrics, FULL.height, FULL.width) == (7, 256, 4096)
    assert FULL.fabrics * FULL.normal_per_fabric == 140
    assert FULL.fabrics * FULL.defective_per_fabric == 105
    assert SMALL.width // SMALL.height == FULL.width // FULL.height == 16


def test_embedded_default_is_generated_once_even_when_processes_race(tmp_path, monkeypatch):
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "home"))
    root = default_synthetic_root()
    assert root == tmp_path / "home" / "synthetic" / "aitex-small-seed0-v2"
    code = "from vae.data import ensure_synthetic; print(ensure_synthetic())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs == [str(root)] * 3
    assert sorted(p.name for p in root.parent.iterdir()) == [root.name]  # no temp dirs left
    before = (root / "synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic() == root and (root / "synthetic.json").stat().st_mtime_ns == before
    splits = load_splits(DataConfig(patch_size=64))  # what `aitexvae tune` reads by default
    assert splits.summary.root == str(root) and len(splits.train) > 0
    assert Path(splits.summary.cache["path"]).parent == tmp_path / "home" / "cache" / "patches"
