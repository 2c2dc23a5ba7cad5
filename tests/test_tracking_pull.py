"""``pull`` / ``load_model`` / ``aitexvae pull``: real folders, a real SQLite store, and pickle
payloads that would leave a marker file behind if anything unpickled them."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import vae
from search.cli import main as aitexvae
from tests.support.checkpoints import (
    IMAGE_SIZE,
    make_model,
    outputs,
    tiny_config,
    validation_set,
)
from tests.support.mlflow_server import migrated_sqlite
from tracking.artifacts import UnsafeArtifactError, find_pickles
from tracking.cli import load_model
from tracking.pull import pull
from vae.score import Calibration


class Payload:
    """Unpickling this creates ``marker`` (what an attacker's payload would do instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "model"
    vae.save(make_model(tiny_config(), seed=7), folder)
    Calibration.fit(np.linspace(0.0, 1.0, 50)).to_json(folder / "calibration.json")
    return folder


@pytest.fixture
def store(tmp_path, tmp_path_factory) -> tuple[str, MlflowClient, str]:
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("pull-tests",
                                          artifact_location=(tmp_path / "art").as_uri())
    return uri, client, client.create_run(experiment).info.run_id


@pytest.mark.parametrize("name,writer", [
    ("evil.pkl", lambda path, payload: path.write_bytes(pickle.dumps(payload))),
    ("notes.dat", lambda path, payload: path.write_bytes(pickle.dumps(payload, protocol=4))),
    ("extra.bin", lambda path, payload: torch.save({"x": payload}, path)),
])
def test_a_local_folder_with_a_pickle_payload_is_refused_without_unpickling(model_dir, tmp_path,
                                                                             name, writer):
    marker = tmp_path / "payload-ran"
    writer(model_dir / name, Payload(marker))
    assert not marker.exists()
    assert [p.name for p in find_pickles(model_dir)] == [name]
    with pytest.raises(UnsafeArtifactError, match=name):
        load_model(str(model_dir))
    assert not marker.exists()


def test_pull_refuses_a_run_checkpoint_holding_a_pickle_and_writes_nothing(model_dir, store,
                                                                           tmp_path, capsys):
    uri, client, run_id = store
    marker = tmp_path / "payload-ran"
    (model_dir / "optimizer.pt").write_bytes(pickle.dumps(Payload(marker)))
    client.log_artifacts(run_id, str(model_dir), "checkpoints/best")
    out = tmp_path / "out"
    with pytest.raises(UnsafeArtifactError, match="optimizer.pt"):
        pull(f"runs:/{run_id}/checkpoints/best", out, tracking_uri=uri)
    assert not out.exists() or not any(out.iterdir())
    capsys.readouterr()  # only what the CLI prints below counts
    code = aitexvae(["pull", "--model-uri", f"runs:/{run_id}/checkpoints/best",
                     "--tracking-uri", uri, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing" in err[0] and "optimizer.pt" in err[0]
    assert not marker.exists()


def test_pull_of_a_run_checkpoint_rebuilds_the_model(model_dir, store, tmp_path, capsys):
    uri, client, run_id = store
    client.log_artifacts(run_id, str(model_dir), "checkpoints/best")
    out = tmp_path / "out"
    code = aitexvae(["pull", "--model-uri", f"runs:/{run_id}/checkpoints/best",
                     "--tracking-uri", uri, "--out", str(out)])
    assert code == 0 and "with calibration.json" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["calibration.json", "config.json",
                                                     "model.safetensors"]
    images, _ = validation_set()
    np.testing.assert_array_equal(outputs(vae.load(out), images),
                                  outputs(vae.load(model_dir), images))
    model = load_model(f"runs:/{run_id}/checkpoints/best", tracking_uri=uri)
    assert model.calibration == Calibration.from_json(model_dir / "calibration.json")
    np.testing.assert_array_equal(outputs(model, images), outputs(vae.load(model_dir), images))


def test_pull_without_calibration_says_so_and_drops_a_stale_one(model_dir, store, tmp_path):
    uri, client, run_id = store
    (model_dir / "calibration.json").unlink()
    client.log_artifacts(run_id, str(model_dir), "ckpt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "calibration.json").write_text("{}")  # from an earlier pull of another model
    pulled = pull(f"runs:/{run_id}/ckpt", out, tracking_uri=uri)
    assert not pulled.calibrated and not (out / "calibration.json").exists()


@pytest.mark.parametrize("argv,message", [
    (["--model-uri", "s3://bucket/model"], "is not supported"),
    (["--model-uri", "models:/no-such-model@champion"], "cannot download"),
    (["--tracking-uri", "sqlite:////nonexistent/dir/mlflow.db"], "no MLflow database"),
])
def test_bad_pull_requests_fail_with_one_line_and_exit_2(store, tmp_path, capsys, argv, message):
    uri = store[0]
    arguments = ["pull", "--tracking-uri", uri, "--out", str(tmp_path / "out"), *argv]
    assert aitexvae(arguments) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_load_model_names_what_it_expects_for_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder nor a model URI"):
        load_model(str(tmp_path / "missing"))


def test_a_strip_reference_pyfunc_scores_the_patches_of_one_call_as_one_strip(store, tmp_path):
    import mlflow

    from tracking.registry import global_tracking_uri, log_pyfunc
    from vae.score.reference import signed_residuals, strip_reference, strip_scores

    uri, client, run_id = store
    model = make_model(tiny_config(**{"score.select": "best", "score.reference": "strip_fabric"}),
                       seed=2)
    images, _ = validation_set(normal=4, defect=2)
    images[0, :, :, 4:6] = 255  # the fabric's edge line: left out by the pyfunc as by scoring
    info = log_pyfunc(client, uri, run_id, vae.save(model, tmp_path / "weights"), images[:2])
    with global_tracking_uri(uri):
        pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    scores = pyfunc.predict(images)
    np.testing.assert_allclose(scores, strip_scores(model, images, reference="strip_fabric")[0],
                               rtol=1e-5, atol=1e-7)
    blind = strip_reference(signed_residuals(model, images)[0], reference="strip_fabric")[1]
    assert scores[0] < float(blind[0]) and np.allclose(scores[1:], blind[1:].numpy(), rtol=1e-5)
    patchwise = strip_scores(model, images, reference="strip_peak")[0]  # from borders only
    assert patchwise[0] == pytest.approx(float(blind[0]), rel=1e-5)
    with pytest.raises(ValueError, match=r"send one strip's patches per call, at least 2; got 1"):
        pyfunc.predict(images[:1])


def test_a_resized_strip_reference_pyfunc_compares_only_patches_that_share_no_pixel():
    """A resized model cuts each image into patches, the last aligned to the edge: those that
    overlap must not serve as each other's reference (a defect would find itself)."""
    from tracking.pyfunc_model import AitexVAEScorer
    from vae.data.patches import cut
    from vae.data.resize import resize_image
    from vae.score.reference import strip_scores

    side = IMAGE_SIZE
    scorer = AitexVAEScorer()
    scorer.model = make_model(tiny_config(**{"score.reference": "strip_peak",
                                             "model.input_resize": 2 * side}), seed=4)
    images, _ = validation_set(normal=2, defect=1)  # 32² images, resized to 64²: 4 patches
    parts, _, xs, ys = cut(resize_image(images[0], 2 * side), np.zeros((2 * side,) * 2, bool),
                           side, side)
    expected = strip_scores(scorer.model, parts, np.stack([xs, ys], 1),
                            reference="strip_peak")[0].max()
    assert scorer.predict(None, images)[0] == pytest.approx(float(expected), rel=1e-6)
    # 48²: patches at 0 and 16 on each axis, every one sharing pixels with every other.
    scorer.model = make_model(tiny_config(**{"score.reference": "strip",
                                             "model.input_resize": side + side // 2}), seed=4)
    with pytest.raises(ValueError, match=r"the patch at \(0, 0\) has nothing to be compared "
                                         r"with: every other patch of its strip shares pixels"):
        scorer.predict(None, images)
