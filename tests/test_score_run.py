"""``aitexvae score`` end to end on real PNG files and a real (small, untrained) AitexVAE.

The data set is written by the test in the AITEX layout, quirks included: a strip whose width is
not a multiple of the patch, an unreadable PNG and a strip smaller than one patch.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_auc_score

import vae
from search.cli import main
from vae.config import ModelConfig, ScoreConfig, VAEConfig
from vae.model import build_model
from vae.score import CALIBRATION_FILE, Calibration, aupro, score_patches, stitch
from vae.score.reference import reference_scorer, signed_residuals, strip_reference
from vae.score.run import CSV_COLUMNS

P = 32  # patch = model image size
STRIPS = {  # file → (fabric, width, defect boxes (y0, y1, x0, x1))
    "NODefect_images/roll1/0001_000_01.png": ("01", 128, []),
    "NODefect_images/roll1/0002_000_01.png": ("01", 128, []),
    "NODefect_images/roll2/0003_000_02.png": ("02", 128, []),
    "Defect_images/0005_002_01.png": ("01", 128, [(10, 16, 40, 50)]),
    "Defect_images/0006_010_02.png": ("02", 120, [(4, 9, 97, 105), (20, 30, 2, 5)]),
    "Defect_images/0007_002_01.png": ("01", 128, [(0, 32, 60, 68)]),  # crosses a patch border
}


def _fabric(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    weave = 100 + 40 * np.sin(xx * 0.8) * np.cos(yy * 0.8)
    return np.clip(weave + rng.normal(0, 8, (height, width)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def aitex_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("aitex")
    for folder in ("Defect_images", "NODefect_images", "Mask_images"):
        (root / folder).mkdir()
    for seed, (name, (_, width, boxes)) in enumerate(STRIPS.items()):
        image = _fabric(P, width, seed)
        mask = np.zeros_like(image)
        for y0, y1, x0, x1 in boxes:
            image[y0:y1, x0:x1] = 250
            mask[y0:y1, x0:x1] = 255
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        if boxes:
            Image.fromarray(mask).save(root / "Mask_images" / f"{path.stem}_mask.png")
    (root / "Defect_images" / "0008_002_01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.zeros((P, 64), np.uint8)).save(root / "Mask_images/0008_002_01_mask.png")
    Image.fromarray(_fabric(16, 128, 9)).save(root / "NODefect_images/roll1/0009_000_01.png")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(VAEConfig(model=ModelConfig(image_size=P, latent_dim=8)))
    directory = vae.save(model, tmp_path_factory.mktemp("model"))
    normal = np.stack([_fabric(P, P, 100 + i) for i in range(20)])[:, None]
    scores, _ = score_patches(model, normal, keep_maps=False)
    Calibration.fit(scores, quantile=0.9).to_json(directory / CALIBRATION_FILE)
    return directory


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def _strip(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(Image.open(root / name))
    mask_path = root / "Mask_images" / f"{Path(name).stem}_mask.png"
    mask = np.asarray(Image.open(mask_path)) > 127 if mask_path.exists() else \
        np.zeros(image.shape, bool)
    return image, mask


def _cut(image: np.ndarray, width: int) -> tuple[np.ndarray, list[int]]:
    xs = list(range(0, width - P + 1, P))
    xs += [width - P] if xs[-1] != width - P else []
    return np.stack([image[:, x:x + P] for x in xs])[:, None], xs


@pytest.fixture(scope="module")
def scored(aitex_root, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    code = main(["score", "--model", str(model_dir), "--data-root", str(aitex_root),
                 "--out", str(out), "--batch-size", "5"])
    return code, out


def test_scores_csv_has_one_row_per_patch_with_positions_labels_decisions(scored, aitex_root,
                                                                         model_dir):
    code, out = scored
    assert code == 0
    rows = _rows(out)
    threshold = Calibration.from_json(model_dir / CALIBRATION_FILE).threshold
    by_file: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_file.setdefault(row["file"], []).append(row)
    assert sorted(by_file) == sorted(STRIPS)
    for name, (fabric, width, _) in STRIPS.items():
        _, mask = _strip(aitex_root, name)
        patches_mask, xs = _cut(mask, width)
        got = by_file[name]
        assert [int(r["patch_index"]) for r in got] == list(range(len(xs)))
        assert [int(r["x"]) for r in got] == xs and {r["y"] for r in got} == {"0"}
        assert [int(r["label"]) for r in got] == [int(m.any()) for m in patches_mask]
        assert {r["fabric"] for r in got} == {fabric}
        assert [int(r["decision"]) for r in got] == [int(float(r["score"]) > threshold)
                                                     for r in got]
    assert [int(r["x"]) for r in by_file["Defect_images/0006_010_02.png"]] == [0, 32, 64, 88]


def test_metrics_json_equals_metrics_recomputed_from_the_csv(scored):
    _, out = scored
    rows = _rows(out)
    metrics = json.loads((out / "metrics.json").read_text())
    score = np.array([float(r["score"]) for r in rows])
    label = np.array([int(r["label"]) for r in rows])
    strip = np.array([r["file"] for r in rows])
    fabric = np.array([r["fabric"] for r in rows])
    assert metrics["n_patches"] == len(rows) == 24
    assert metrics["n_anomalous"] == label.sum() == 5
    assert metrics["patch_auroc"] == pytest.approx(roc_auc_score(label, score), abs=1e-12)
    matched = np.isin(strip, strip[label == 1])
    assert metrics["n_normal_fabric_matched"] == (matched & (label == 0)).sum() == 7
    assert metrics["patch_auroc_fabric_matched"] == pytest.approx(
        roc_auc_score(label[matched], score[matched]), abs=1e-12)
    for name in ("01", "02"):
        sel = fabric == name
        assert metrics["per_fabric"][name]["patch_auroc"] == pytest.approx(
            roc_auc_score(label[sel], score[sel]), abs=1e-12)
        assert metrics["per_fabric"][name]["patch_auroc_fabric_matched"] == pytest.approx(
            roc_auc_score(label[sel & matched], score[sel & matched]), abs=1e-12)
    precision, recall, thresholds = precision_recall_curve(label, score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
    assert metrics["f1_max"] == pytest.approx(f1[:-1].max(), abs=1e-9)
    assert metrics["f1_threshold"] == pytest.approx(thresholds[np.argmax(f1[:-1])], rel=1e-6)
    assert metrics["aupro_fpr_limit"] == 0.3


def test_pixel_metrics_are_those_of_the_stitched_strip_maps(scored, aitex_root, model_dir):
    _, out = scored
    metrics = json.loads((out / "metrics.json").read_text())
    model = vae.load(model_dir)
    strip_maps, strip_masks = [], []
    for name, (_, width, _) in STRIPS.items():
        image, mask = _strip(aitex_root, name)
        patches, xs = _cut(image, width)
        _, maps = score_patches(model, patches)
        strip_maps.append(stitch(maps, xs, [0] * len(xs), image.shape))
        strip_masks.append(mask)
    pixels = np.concatenate([m.ravel() for m in strip_maps])
    truth = np.concatenate([m.ravel() for m in strip_masks])
    assert metrics["pixel_auroc"] == pytest.approx(roc_auc_score(truth, pixels), abs=1e-6)
    assert metrics["aupro"] == pytest.approx(aupro(strip_maps, strip_masks), abs=1e-6)


def test_score_of_a_saved_model_equals_the_in_memory_score(scored, aitex_root, model_dir):
    # What a trial computes in memory (score_patches on its model) is what `score` gives for
    # the saved model on the same patches.
    _, out = scored
    torch.manual_seed(0)
    in_memory = build_model(VAEConfig(model=ModelConfig(image_size=P, latent_dim=8)))
    rows = [r for r in _rows(out) if r["file"] == "Defect_images/0005_002_01.png"]
    image, _ = _strip(aitex_root, "Defect_images/0005_002_01.png")
    expected, _ = score_patches(in_memory, _cut(image, 128)[0])
    np.testing.assert_array_equal(np.array([r["score"] for r in rows], np.float32), expected)


def test_skipped_files_are_reported_and_overlays_written(scored, capsys):
    _, out = scored
    summary = json.loads((out / "summary.json").read_text())
    skipped = {s["file"]: s["reason"] for s in summary["skipped"]}
    assert "smaller than one 32x32 patch" in skipped["NODefect_images/roll1/0009_000_01.png"]
    assert "Defect_images/0008_002_01.png" in skipped
    assert summary["images"] == 6 and summary["patches"] == 24
    assert summary["score_config"]["map"] == "l2_smooth" and summary["threshold"] > 0
    overlays = summary["files"]["overlays"]
    assert len(overlays) == 6
    # defective strips first; labelled strips get 3 panels: image, heat map, mask
    assert sorted(Path(o).name[4:8] for o in overlays[:3]) == ["0005", "0006", "0007"]
    for name in overlays:
        width = 120 if "0006" in name else 128
        assert Image.open(out / name).size == (width, 3 * P)


def test_image_files_without_labels_and_bad_files(aitex_root, model_dir, tmp_path, capsys):
    good = aitex_root / "NODefect_images/roll1/0001_000_01.png"
    rgb = tmp_path / "colour.png"
    Image.fromarray(np.zeros((P, P, 3), np.uint8)).save(rgb)
    small = aitex_root / "NODefect_images/roll1/0009_000_01.png"
    out = tmp_path / "out"
    code = main(["score", "--model", str(model_dir), "--images", str(good), str(rgb), str(small),
                 str(tmp_path / "missing.png"), "--out", str(out), "--overlays", "1"])
    assert code == 0
    rows = _rows(out)
    assert len(rows) == 4 and {r["file"] for r in rows} == {str(good)}
    assert {r["label"] for r in rows} == {""} and {r["fabric"] for r in rows} == {""}
    assert not (out / "metrics.json").exists()
    printed = capsys.readouterr().out
    assert "skipped 3 file(s)" in printed
    assert "has 3 colour channel(s) (mode RGB) but the model was trained on 1" in printed
    assert "smaller than one 32x32 patch" in printed and "missing.png" in printed
    overlays = list((out / "overlays").glob("*.png"))
    assert len(overlays) == 1 and Image.open(overlays[0]).size == (128, 2 * P)  # no mask panel


def test_bad_model_root_or_nothing_scorable_exit_2(aitex_root, model_dir, tmp_path, capsys):
    assert main(["score", "--model", str(tmp_path / "nope"), "--data-root", str(aitex_root),
                 "--out", str(tmp_path / "o1")]) == 2
    assert "cannot load model" in capsys.readouterr().err
    assert main(["score", "--model", str(model_dir), "--data-root", str(tmp_path),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "expected the AITEX layout" in capsys.readouterr().err
    assert main(["score", "--model", str(model_dir), "--images", str(tmp_path / "x.png"),
                 "--out", str(tmp_path / "o3")]) == 2
    assert "no image could be scored" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--model", str(model_dir), "--images", "a.png", "--out", "o",
              "--batch-size", "0"])
    assert exit_info.value.code == 2


def test_folder_layout_is_scored_with_labels(model_dir, tmp_path):
    root = tmp_path / "carpet"
    for folder in ("train/good", "test/good", "test/cut", "ground_truth/cut"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(_fabric(P, 64, 1)).save(root / "train/good/000.png")
    Image.fromarray(_fabric(P, 64, 2)).save(root / "test/good/000.png")
    image, mask = _fabric(P, 64, 3), np.zeros((P, 64), np.uint8)
    image[5:9, 40:44], mask[5:9, 40:44] = 255, 255
    Image.fromarray(image).save(root / "test/cut/000.png")
    Image.fromarray(mask).save(root / "ground_truth/cut/000_mask.png")
    out = tmp_path / "out"
    assert main(["score", "--model", str(model_dir), "--data-root", str(root), "--format",
                 "folder", "--out", str(out), "--stride", "16"]) == 0
    rows = _rows(out)
    files = {r["file"] for r in rows}
    assert files == {"train/good/000.png", "test/good/000.png", "test/cut/000.png"}
    cut_rows = [r for r in rows if r["file"] == "test/cut/000.png"]
    assert [int(r["x"]) for r in cut_rows] == [0, 16, 32]  # stride 16 over a 64-wide image
    assert [int(r["label"]) for r in cut_rows] == [0, 1, 1]
    assert {r["defect_code"] for r in cut_rows} == {"cut"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_anomalous"] == 2 and metrics["n_normal_fabric_matched"] == 1


def test_reference_strip_scores_each_image_against_its_own_other_patches(aitex_root, model_dir,
                                                                         tmp_path, caplog):
    out = tmp_path / "strip"
    assert main(["score", "--model", str(model_dir), "--data-root", str(aitex_root),
                 "--out", str(out), "--batch-size", "5", "--reference", "strip"]) == 0
    rows = _rows(out)
    assert {r["decision"] for r in rows} == {""}  # the calibration is for the model's own scores
    assert "not for --reference strip scores" in caplog.text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "strip" and summary["score_config"] == reference_scorer("strip")
    assert summary["score_config"]["smooth"] == 3 and summary["score_config"]["reduction"] == "max"
    model = vae.load(model_dir)
    for name, (_, width, _) in STRIPS.items():
        patches, xs = _cut(_strip(aitex_root, name)[0], width)
        corners = np.stack([xs, np.zeros_like(xs)], 1)  # 0006 ends on a patch overlapping one
        residuals, clipped = signed_residuals(model, patches)
        _, expected = strip_reference(residuals, corners, reference="strip", clipped=clipped)
        got = [float(r["score"]) for r in rows if r["file"] == name]
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert json.loads((out / "metrics.json").read_text())["n_anomalous"] == 5
    # With a threshold given, the decisions are that threshold's.
    decided = tmp_path / "decided"
    assert main(["score", "--model", str(model_dir), "--data-root", str(aitex_root),
                 "--out", str(decided), "--reference", "strip", "--threshold", "0.05"]) == 0
    assert [r["decision"] for r in _rows(decided)] == \
        [str(int(float(r["score"]) > 0.05)) for r in _rows(decided)]


def test_a_model_validated_with_the_strip_reference_scores_with_it_and_its_calibration(
        aitex_root, tmp_path, caplog):
    torch.manual_seed(0)
    config = VAEConfig(model=ModelConfig(image_size=P, latent_dim=8),
                       score=ScoreConfig(select="best", reference="strip_fabric"))
    model = build_model(config)
    directory = vae.save(model, tmp_path / "model")
    Calibration.fit(np.array([0.1, 0.2, 0.3]), quantile=0.5).to_json(
        directory / CALIBRATION_FILE)
    threshold = Calibration.from_json(directory / CALIBRATION_FILE).threshold
    root = Path(shutil.copytree(aitex_root, tmp_path / "aitex"))
    name = "Defect_images/0005_002_01.png"
    edged = _strip(root, name)[0].copy()
    edged[:, 100:102] = 255  # the fabric's edge line, 28 px from the strip's right end
    Image.fromarray(edged).save(root / name)
    out = tmp_path / "own"
    assert main(["score", "--model", str(directory), "--data-root", str(root),
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "strip_fabric" and summary["threshold"] == threshold
    assert summary["score_config"] == reference_scorer("strip_fabric")
    rows = _rows(out)
    patches, xs = _cut(edged, 128)
    corners = np.stack([xs, np.zeros_like(xs)], 1)
    residuals, clipped = signed_residuals(model, patches)
    _, expected = strip_reference(residuals, corners, reference="strip_fabric", clipped=clipped)
    got = [float(r["score"]) for r in rows if r["file"] == name]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-7)
    blind = strip_reference(residuals, corners, reference="strip_fabric")[1]
    patchwise = strip_reference(residuals, corners, reference="strip_peak", clipped=clipped)[1]
    assert np.flatnonzero(clipped.any(1)).tolist() == [3]  # the last patch, at x = 96
    assert float(expected[3]) < float(blind[3]) == float(patchwise[3])  # no run from a border
    assert [r["decision"] for r in rows] == [str(int(float(r["score"]) > threshold))
                                             for r in rows]
    # Each patch on its own instead: another scorer, so the calibration does not apply.
    alone = tmp_path / "alone"
    assert main(["score", "--model", str(directory), "--data-root", str(root),
                 "--out", str(alone), "--reference", "none"]) == 0
    assert {r["decision"] for r in _rows(alone)} == {""}
    assert "(reference strip_fabric), not for --reference none scores" in caplog.text
    assert json.loads((alone / "summary.json").read_text())["score_config"]["reference"] == "none"


def test_reference_strip_skips_an_image_of_one_patch_and_names_the_way_out(model_dir, tmp_path,
                                                                         capsys):
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    Image.fromarray(_fabric(P, P, 1)).save(one)
    Image.fromarray(_fabric(P, 2 * P, 2)).save(two)
    out = tmp_path / "out"
    assert main(["score", "--model", str(model_dir), "--images", str(one), str(two),
                 "--out", str(out), "--reference", "strip"]) == 0
    assert {r["file"] for r in _rows(out)} == {str(two)}
    (skipped,) = json.loads((out / "summary.json").read_text())["skipped"]
    assert skipped["file"] == str(one) and "the patch at (0, 0)" in skipped["reason"] \
        and f"--stride {P}, or --reference none" in skipped["reason"]
    # At half the patch size, the middle patch of a two-patch-wide image meets both others.
    half = tmp_path / "half"
    assert main(["score", "--model", str(model_dir), "--images", str(two), "--out", str(half),
                 "--reference", "strip", "--stride", str(P // 2)]) == 2
    (skipped,) = json.loads((half / "summary.json").read_text())["skipped"]
    assert f"the patch at ({P // 2}, 0) shares pixels with every other patch" in skipped["reason"]
    assert main(["score", "--model", str(model_dir), "--images", str(one),
                 "--out", str(tmp_path / "none"), "--reference", "strip"]) == 2
    assert "no image could be scored" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", "--model", str(model_dir), "--images", str(one), "--out", str(out),
              "--reference", "strips"])
    assert "invalid choice: 'strips'" in capsys.readouterr().err
