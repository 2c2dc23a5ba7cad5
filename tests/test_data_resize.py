"""Folder data sets of many sizes, modes and formats: ``data.resize`` (issue 15).

Real files written by ``tests.support.folder_fixture``; a real SQLite MLflow store for the
pyfunc. Counts and labels with and without resizing, masks that stay binary and keep their
defects, the summary's one line per kind, scoring that resizes as the model's data was and
reports maps at the original size.
"""

from __future__ import annotations

import csv
import json

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from sklearn.metrics import roc_auc_score

import vae
from search.cli import main as aitexvae
from search.settings import SearchSettings
from tests.support.checkpoints import make_model, tiny_config
from tests.support.folder_fixture import PATCH, write_folder_set
from tests.support.mlflow_server import migrated_sqlite
from vae.config import ConfigError, ModelConfig
from vae.data.config import DataConfig
from vae.data.layouts import Issue
from vae.data.load import load_catalog
from vae.data.readers import NOT_COVERED, TOO_SMALL
from vae.data.resize import resize_image, resize_map, resize_mask
from vae.score import score_patches
from vae.score.inputs import dataset_source, files_source
from vae.score.run import score_source


@pytest.fixture
def folder(tmp_path):
    return write_folder_set(tmp_path / "fabric")


def _config(folder, **changes) -> DataConfig:
    return DataConfig(format="folder", root=str(folder.root), patch_size=PATCH, cache=False,
                      **changes)


def test_the_folder_default_resizes_every_image_to_one_patch_keeping_every_label(folder):
    config = _config(folder)
    assert config.resize == PATCH and DataConfig(patch_size=PATCH).resize == 0  # aitex: native
    patches, summary = load_catalog(config)
    usable = len(folder.sizes) - len(folder.unlabelled)
    assert summary.strips == {"normal": usable - 2, "defective": 2}
    assert len(patches) == usable and patches.images.shape[1:] == (1, PATCH, PATCH)
    anomalous = {patches.strips[i].strip for i in patches.strip_index[patches.labels == 1]}
    assert anomalous == set(folder.defects)  # the 2x2-px defects survived a 2-3x shrink
    assert [s["file"] for s in summary.skipped] == ["test/stain/000.png"]
    assert not any(n["kind"] == NOT_COVERED for n in summary.notes)
    assert summary.resize == PATCH and "resized to 32x32" in summary.table()


def test_without_resizing_small_images_are_counted_and_the_summary_names_the_flag(folder):
    patches, summary = load_catalog(_config(folder, resize=0))
    small = sorted(s["file"].rsplit(".", 1)[0] for s in summary.skipped if s["kind"] == TOO_SMALL)
    assert small == sorted(folder.small)
    assert len(patches) > len(folder.sizes)  # native: several patches per large image
    table = summary.table()
    assert f"  {len(folder.small)} x {TOO_SMALL}" in table.splitlines()
    assert f"--resize {PATCH}" in summary.include_hint() and "--resize 32" in table
    # remarks collapse to one line per kind, whatever the image sizes
    uncovered = [n for n in summary.notes if n["kind"] == NOT_COVERED]
    assert len({n["note"] for n in uncovered}) > 1
    assert f"  {len(uncovered)} x {NOT_COVERED}" in table.splitlines()


def test_a_resized_mask_stays_binary_and_keeps_a_defect_thinner_than_the_scale():
    mask = np.zeros((300, 400), bool)
    mask[123, 251] = True  # one pixel; the image shrinks 12.5x
    small = resize_mask(mask, 32)
    assert small.dtype == bool and small.shape == (32, 32) and small.sum() >= 1
    assert small[int(123 / 300 * 32), int(251 / 400 * 32)]
    nearest = np.asarray(Image.fromarray(mask).resize((32, 32), Image.Resampling.NEAREST))
    assert not nearest.any()  # why the rule is "any pixel under it", not nearest-neighbour
    grown = resize_mask(mask[:20, :20] | True, 64)
    assert grown.all() and grown.dtype == bool


def test_resize_values_are_checked_in_one_place_with_what_is_allowed(folder, capsys):
    with pytest.raises(ConfigError, match=r"data.resize=16 is invalid; allowed: 0 .*\[32, 4096\]"):
        _config(folder, resize=16)
    with pytest.raises(ConfigError, match=r"model.input_resize=8 is invalid"):
        ModelConfig(image_size=32, input_resize=8)
    assert DataConfig(format="folder", root="x", patch_size=32).with_overrides(
        patch_size=64).resize == 64  # a default resize follows the patch size
    code = aitexvae(["data", "check", "--format", "folder", "--data-root", str(folder.root),
                     "--patch-size", "32", "--resize", "16", "--no-cache"])
    assert code == 2 and "error: data.resize=16 is invalid" in capsys.readouterr().err
    code = aitexvae(["data", "check", "--format", "folder", "--data-root", str(folder.root),
                     "--patch-size", "0", "--no-cache"])  # not silently the default 256
    assert code == 2 and "data.patch_size=0 is invalid" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"--resize: data.resize=20 is invalid"):
        SearchSettings(data_root=str(folder.root), data_format="folder", image_size=32, resize=20)
    settings = SearchSettings(data_root=str(folder.root), data_format="folder", image_size=32)
    assert settings.base_config()["model.input_resize"] == 32  # stored with every trial's model


def test_data_check_reads_mixed_sizes_modes_and_formats(folder, capsys):
    code = aitexvae(["data", "check", "--format", "folder", "--data-root", str(folder.root),
                     "--patch-size", "32", "--no-cache", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["resize"] == PATCH
    assert report["patches"] == {"total": 10, "anomalous": 2}
    kinds = {n["kind"] for n in report["notes"]}
    assert {"converted from mode RGB", "converted from mode LA", "converted from mode I;16"} \
        <= kinds


def _resized_model(seed: int = 3):
    return make_model(tiny_config(**{"model.input_resize": PATCH}), seed=seed)


def test_scoring_resizes_as_the_model_was_trained_and_maps_come_back_at_the_original_size(
        folder, tmp_path):
    model = _resized_model()
    report = score_source(model, dataset_source(folder.root, "folder", channels=1),
                          tmp_path / "out", max_overlays=20)
    usable = len(folder.sizes) - len(folder.unlabelled)
    assert report.resize == PATCH and report.images == usable and report.patches == usable
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").read_text().splitlines()))
    assert len(rows) == usable and {r["patch_index"] for r in rows} == {"0"}
    # Every score is the model's score of the resized image; pixel metrics compare the map,
    # resized back, with the *original* mask.
    expected_scores, maps, masks = {}, [], []
    for item in dataset_source(folder.root, "folder", channels=1).items:
        if isinstance(item, Issue):  # test/stain/000: no mask
            continue
        score, amap = score_patches(model, resize_image(item.image, PATCH)[None])
        expected_scores[item.file] = float(score[0])
        maps.append(resize_map(amap[0], *item.image.shape[1:]).ravel())
        masks.append(item.mask.ravel())
    for row in rows:
        assert float(row["score"]) == pytest.approx(expected_scores[row["file"]], rel=1e-6)
    assert report.metrics["pixel_auroc"] == pytest.approx(
        roc_auc_score(np.concatenate(masks), np.concatenate(maps)), abs=1e-9)
    sizes = sorted(Image.open(tmp_path / "out" / o).size for o in report.overlays)
    originals = sorted((w, 3 * h) for name, (w, h) in folder.sizes.items()  # 3 panels each
                       if name not in folder.unlabelled)
    assert len(report.overlays) == usable and sizes == originals


def test_without_the_models_resize_small_images_are_skipped_with_the_flag_that_includes_them(
        folder, tmp_path):
    small = [folder.root / f"{name}.png" for name in folder.small]
    report = score_source(_resized_model(), files_source(small, channels=1), tmp_path / "o",
                          resize=0)
    assert report.images == 0 and len(report.skipped) == 2
    assert all(f"--resize {PATCH} would include it" in s.reason for s in report.skipped)
    with pytest.raises(ConfigError, match="resize=20 is invalid"):
        score_source(_resized_model(), files_source(small, channels=1), tmp_path / "o", resize=20)


def test_the_logged_pyfunc_resizes_new_images_as_its_trial_did(folder, tmp_path, monkeypatch):
    from tracking.registry import global_tracking_uri, log_pyfunc

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    model = _resized_model()
    weights = vae.save(model, tmp_path / "weights")
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path.parent)
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("resize"))
    info = log_pyfunc(client, uri, run.info.run_id, weights)
    assert info.signature.inputs.inputs[0].shape == (-1, 1, -1, -1)  # any one image size
    with global_tracking_uri(uri):
        pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    gray = np.asarray(Image.open(folder.root / "test/good/001.png"))  # 36x52: not a patch
    images = np.stack([gray, gray[::-1]])[:, None]  # (N, C, H, W) uint8, any H and W
    expected, _ = score_patches(model, np.stack([resize_image(i, PATCH) for i in images]),
                                keep_maps=False)
    np.testing.assert_allclose(pyfunc.predict(images), expected, rtol=1e-6)
