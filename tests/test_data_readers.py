"""Reading AITEX (every quirk) and folder layouts into patches, from real PNG files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.aitex_fixture import (
    CORE,
    EXPECTED,
    PATCH,
    UNION,
    bomb_png,
    mask_from,
    save,
    texture,
    write_aitex_fixture,
)
from vae.data import DataConfig, DataError, LayoutError, load_catalog


def _config(root: Path, **changes) -> DataConfig:
    return DataConfig(format=changes.pop("format", "aitex"), root=str(root), patch_size=PATCH,
                      cache=False, **changes)


@pytest.fixture(scope="module")
def aitex(tmp_path_factory) -> Path:
    return write_aitex_fixture(tmp_path_factory.mktemp("aitex"))


@pytest.fixture(scope="module")
def catalog(aitex):
    return load_catalog(_config(aitex))


def _strip(catalog, stem: str) -> np.ndarray:
    return np.flatnonzero(np.char.endswith(catalog.strip, stem))


def test_counts_of_strips_patches_and_skipped_files(catalog):
    patches, summary = catalog
    assert summary.strips == {"normal": EXPECTED["normal_strips"],
                              "defective": EXPECTED["defective_strips"]}
    assert summary.fabrics == {"00": {"normal": 8, "defective": 4},
                               "01": {"normal": 9, "defective": 1}}
    assert len(patches) == EXPECTED["patches"] == summary.patches["total"]
    skipped = {s["file"]: s["reason"] for s in summary.skipped}
    assert set(skipped) == set(EXPECTED["skipped"])
    for file, reason in EXPECTED["skipped"].items():
        assert reason in skipped[file], (file, skipped[file])
    assert patches.images.dtype == np.uint8 and patches.images.shape[1:] == (1, PATCH, PATCH)
    assert patches.masks.dtype == bool and patches.labels.dtype == np.int64


def test_soft_mask_is_thresholded_above_127(catalog):
    patches, _ = catalog
    y0, y1, x0, x1 = CORE["0100_002_00"]
    rows = _strip(patches, "0100_002_00")
    assert patches.defect_pixels[rows].sum() == (y1 - y0) * (x1 - x0)  # rows at 100/127 excluded
    stitched = np.zeros((32, 256), bool)
    for i in rows:
        stitched[:, patches.x[i]:patches.x[i] + PATCH] |= patches.masks[i]
    assert np.array_equal(stitched, mask_from([CORE["0100_002_00"]]) > 0)


def test_two_masks_are_unioned_and_label_their_patches(catalog):
    patches, _ = catalog
    rows = _strip(patches, "0104_025_00")
    anomalous_x = sorted(patches.x[rows][patches.labels[rows] == 1].tolist())
    assert anomalous_x == [0, 192]  # x 10..12 and x 200..210
    assert patches.defect_pixels[rows].sum() == sum((b - a) * (d - c) for a, b, c, d in UNION)


def test_odd_width_strip_gets_a_right_aligned_last_patch(catalog):
    patches, summary = catalog
    rows = _strip(patches, "0102_010_01")
    assert patches.x[rows].tolist() == [0, 32, 64, 96, 128, 160, 192, 204]
    assert patches.strip_shape("Defect_images/0102_010_01") == (32, 236)
    assert patches.labels[rows].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]  # x 220..230 in both
    assert any("236x32" in n["note"] for n in summary.notes)


def test_la_and_rgb_files_become_gray_with_the_right_pixels(aitex, catalog):
    patches, summary = catalog
    notes = {(n["file"], n["note"]) for n in summary.notes}
    assert ("NODefect_images/roll_a/0003_000_00.png", "converted from mode LA") in notes
    assert ("Mask_images/0101_006_00_mask.png", "converted from mode LA") in notes
    la = np.asarray(Image.open(aitex / "NODefect_images/roll_a/0003_000_00.png").getchannel("L"))
    rows = _strip(patches, "0003_000_00")
    assert np.array_equal(np.concatenate(patches.images[rows, 0], axis=1), la)
    rgb = Image.open(aitex / "Defect_images/0106_029_00.png")
    rows = _strip(patches, "0106_029_00")
    assert np.array_equal(np.concatenate(patches.images[rows, 0], axis=1),
                          np.asarray(rgb.convert("L")))
    assert patches.labels[_strip(patches, "0101_006_00")].sum() == 1  # LA mask was read


def test_metadata_per_patch(catalog):
    patches, _ = catalog
    i = _strip(patches, "0100_002_00")[1]
    assert (patches.file[i], patches.fabric[i], patches.defect_code[i]) == \
        ("Defect_images/0100_002_00.png", "00", "002")
    assert (patches.x[i], patches.y[i], bool(patches.synthetic[i])) == (32, 0, False)
    odd = _strip(patches, "0018_00_01")
    assert len(odd) == 8 and set(patches.defect_code[odd]) == {"000"}
    assert set(patches.fabric[odd]) == {"01"}


def test_three_channels_replicate_gray(aitex):
    patches, _ = load_catalog(_config(aitex, channels=3))
    assert patches.images.shape[1] == 3
    assert np.array_equal(patches.images[:, 0], patches.images[:, 2])


def test_our_pixel_limit_skips_large_images_before_decoding(aitex):
    patches, summary = load_catalog(_config(aitex, max_image_pixels=5000))
    assert len(patches) == 0
    reasons = [s["reason"] for s in summary.skipped]
    assert sum("max_image_pixels=5000" in r for r in reasons) == 24  # every readable header


def test_mask_size_mismatch_names_both_files(tmp_path):
    rng = np.random.default_rng(1)
    save(texture(rng), tmp_path / "NODefect_images/r/0001_000_00.png")
    save(texture(rng), tmp_path / "Defect_images/0002_002_00.png")
    save(mask_from([(0, 4, 0, 4)], width=128), tmp_path / "Mask_images/0002_002_00_mask.png")
    with pytest.raises(DataError) as error:
        load_catalog(_config(tmp_path))
    message = str(error.value)
    assert "Mask_images/0002_002_00_mask.png is 128x32" in message
    assert "Defect_images/0002_002_00.png is 256x32" in message


@pytest.mark.parametrize("make", ["missing", "file", "empty_dir"])
def test_wrong_root_shows_the_expected_layout(tmp_path, make):
    root = tmp_path / "data"
    if make == "file":
        root.write_text("x")
    elif make == "empty_dir":
        root.mkdir()
    with pytest.raises(LayoutError) as error:
        load_catalog(_config(root))
    assert str(root) in str(error.value)
    assert "ROOT/NODefect_images/<roll folder>/nnnn_000_ff.png" in str(error.value)


def test_pillow_bomb_header_is_refused_at_open(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    from vae.data.decode import UnreadableImage, read_array
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        read_array(path)


def test_folder_layout(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "carpet"
    for name in ("000", "001", "002"):
        save(texture(rng, 64, 64), root / "train/good" / f"{name}.png")
    save(texture(rng, 64, 64), root / "test/good/000.png")
    save(texture(rng, 64, 64), root / "test/hole/000.png", "RGB")
    save(mask_from([(0, 5, 0, 5)], width=64)[:, :64].repeat(2, 0),
         root / "ground_truth/hole/000_mask.png")
    save(texture(rng, 64, 64), root / "test/hole/001.png")  # no mask: skipped
    patches, summary = load_catalog(_config(root, format="folder", resize=0))
    assert summary.strips == {"normal": 4, "defective": 1}
    assert len(patches) == 5 * 4 and patches.labels.sum() == 1  # native: 4 patches per image
    assert set(patches.fabric) == {"carpet"}
    assert [s["file"] for s in summary.skipped] == ["test/hole/001.png"]
    hints = {s.strip: s.split_hint for s in patches.strips}
    assert hints["test/good/000"] == "test" and hints["train/good/001"] == "train"


def test_unreadable_mask_skips_its_strip_and_16_bit_images_are_scaled(tmp_path):
    rng = np.random.default_rng(3)
    save(texture(rng), tmp_path / "NODefect_images/r/0001_000_00.png")
    wide = (texture(rng).astype(np.uint16) * 257)
    Image.fromarray(wide).save(tmp_path / "NODefect_images/r/0002_000_00.png")  # mode I;16
    save(texture(rng), tmp_path / "Defect_images/0003_002_00.png")
    (tmp_path / "Mask_images").mkdir()
    (tmp_path / "Mask_images/0003_002_00_mask.png").write_bytes(b"")
    patches, summary = load_catalog(_config(tmp_path))
    assert summary.skipped == [{"file": "Defect_images/0003_002_00.png",
                                "reason": "its mask Mask_images/0003_002_00_mask.png is "
                                          "unreadable: empty file (0 bytes)",
                                "kind": "its mask is unreadable"}]
    rows = np.flatnonzero(np.char.endswith(patches.strip, "0002_000_00"))
    assert np.array_equal(np.concatenate(patches.images[rows, 0], axis=1), wide // 257)
    assert ("NODefect_images/r/0002_000_00.png", "converted from mode I;16") in {
        (n["file"], n["note"]) for n in summary.notes}
