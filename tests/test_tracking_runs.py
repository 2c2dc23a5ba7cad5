"""SearchTracker against a SQLite file and a real ``mlflow server`` process, driven without Ray.

One scripted search per backend: a trial that finishes (its best epoch is not its last), one
stopped early by the scheduler, one that goes NaN after a better-looking epoch, one that fails
after an even better one. Only the first may become the champion.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from PIL import Image

import vae
from tests.support.checkpoints import (
    make_model,
    outputs,
    tiny_config,
    validation_set,
    write_checkpoint,
)
from tests.support.mlflow_server import free_port, migrated_sqlite, mlflow_server
from tracking import settings as names
from tracking.artifacts import find_pickles
from tracking.preflight import check_tracking_uri
from tracking.probe import ACCEPT, REJECT, WRONG, choose_probe
from tracking.pull import pull
from tracking.registry import global_tracking_uri
from tracking.runs import SearchTracker
from tracking.settings import TrackingSettings
from vae import checkpoint
from vae.checkpoint import copy_for_pull
from vae.score import Calibration, score_patches

SCRIPT = {  # trial -> (config overrides, val/auroc per epoch, how it ends)
    "good": ({"model.latent_dim": 4, "train.learning_rate": 1e-3}, [0.6, 0.8, 0.7], None),
    "early": ({"model.latent_dim": 8, "train.learning_rate": 1e-2}, [0.65], None),
    "nan": ({"model.latent_dim": 6, "train.learning_rate": 3e-3}, [0.9, math.nan], None),
    "broken": ({"model.latent_dim": 5, "train.learning_rate": 1e-4}, [0.75], "RuntimeError: boom"),
}


@pytest.fixture(scope="module", autouse=True)
def _quiet_mlflow():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield


def run_script(uri: str, workdir: Path) -> dict:
    """Drive a whole search through the tracker; return what the assertions need."""
    check_tracking_uri(uri)  # a reachable store passes the pre-flight check
    val_images, val_labels = validation_set()
    tracker = SearchTracker(TrackingSettings(tracking_uri=uri), "unit-search",
                            probe=choose_probe(val_images, val_labels, per_class=2),
                            validation_labels=val_labels)
    parent = tracker.start_search(
        {"num_samples": 4, "scheduler": "asha"},
        {names.TAG_SEARCH_SPACE: "space.yaml", names.TAG_DATASET: "fp-123",
         names.TAG_RAY_ADDRESS: "127.0.0.1:6379"}, search_id="sid-unit")
    models = {}
    for seed, (trial, (overrides, aurocs, error)) in enumerate(SCRIPT.items()):
        config = tiny_config(**overrides)
        tracker.start_trial(trial, config.flat(), name=f"train_vae_{trial}")
        for epoch, auroc in enumerate(aurocs, start=1):
            # as the trainable reports them: the objective (synthetic here) and its figure
            result = {"epoch": epoch, "train/loss": 100.0 / epoch, "val/objective": auroc,
                      "val/auroc": auroc,
                      "val/mse": 0.01 * epoch, "time_total_s": 1.0, "pid": 1,
                      "config": config.flat()}
            if math.isnan(auroc):
                result = {"epoch": epoch, "val/objective": auroc, "val/auroc": auroc,
                          "nonfinite": 1}
                tracker.log_result(trial, result, nonfinite="the trial reported nonfinite=1")
                continue
            tracker.log_result(trial, result)
            model = make_model(config, seed=100 * seed + epoch)
            models[trial, epoch] = model
            directory = write_checkpoint(workdir / f"{trial}-{epoch}", model, epoch,
                                         {"val/auroc": auroc}, val_images)
            tracker.log_checkpoint(trial, directory)
        tracker.end_trial(trial, error=error)
    outcome = tracker.end_search()
    tracker.close()
    return {"parent": parent, "outcome": outcome, "models": models, "val": val_images,
            "labels": val_labels, "tracker": tracker}


@pytest.fixture(scope="module", params=["sqlite", "server"])
def scripted(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"runs-{request.param}")
    template = tmp_path_factory.getbasetemp()
    if request.param == "sqlite":
        uri = migrated_sqlite(workdir / "mlflow.db", template)
        yield {**run_script(uri, workdir), "uri": uri}
    else:
        with mlflow_server(workdir / "server", template_dir=template) as server:
            yield {**run_script(server.uri, workdir), "uri": server.uri}


def client_for(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def children_by_trial(client: MlflowClient, parent: str) -> dict:
    runs = client.search_runs([client.get_run(parent).info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return {run.data.tags[names.TAG_TRIAL_ID]: run for run in runs}


def test_one_parent_and_one_child_per_trial_with_params_and_tags(scripted):
    client = client_for(scripted["uri"])
    parent = client.get_run(scripted["parent"])
    experiment = parent.info.experiment_id
    assert len(client.search_runs([experiment])) == 1 + len(SCRIPT)
    assert parent.data.tags[names.TAG_ROLE] == "search"
    assert parent.data.tags[names.TAG_DATASET] == "fp-123"
    assert parent.data.tags[names.TAG_SEARCH_SPACE] == "space.yaml"
    assert parent.data.tags[names.TAG_RAY_ADDRESS] == "127.0.0.1:6379"
    assert parent.data.tags[names.TAG_CODE_VERSION]
    assert parent.data.params == {"num_samples": "4", "scheduler": "asha"}
    assert parent.info.status == "FINISHED"
    children = children_by_trial(client, scripted["parent"])
    assert set(children) == set(SCRIPT)
    good = children["good"].data.params
    assert good["model/latent_dim"] == "4" and good["train/learning_rate"] == "0.001"
    assert set(good) == {key.replace(".", "/") for key in tiny_config().flat()}
    assert children["early"].info.run_name == "train_vae_early"


def test_one_metric_value_per_epoch_with_step_equal_to_epoch(scripted):
    client = client_for(scripted["uri"])
    children = children_by_trial(client, scripted["parent"])
    history = client.get_metric_history(children["good"].info.run_id, "val/auroc")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.8), (3, 0.7)]
    assert [m.step for m in client.get_metric_history(children["good"].info.run_id,
                                                      "train/loss")] == [1, 2, 3]
    assert "time_total_s" not in children["good"].data.metrics  # Ray bookkeeping is not logged
    nan_history = client.get_metric_history(children["nan"].info.run_id, "val/auroc")
    assert [m.step for m in nan_history] == [1, 2] and math.isnan(nan_history[1].value)


def test_statuses_and_reasons(scripted):
    children = children_by_trial(client_for(scripted["uri"]), scripted["parent"])
    status = {trial: run.info.status for trial, run in children.items()}
    # ASHA stopping a trial is the search working, not a failure; non-finite is a failure
    assert status == {"good": "FINISHED", "early": "FINISHED", "nan": "FAILED",
                      "broken": "FAILED"}
    outcomes = {trial: run.data.tags[names.TAG_OUTCOME] for trial, run in children.items()}
    assert outcomes["good"] == "completed all 3 epochs"
    assert outcomes["early"] == "stopped early by the scheduler after epoch 1 of 3"
    reasons = {trial: run.data.tags.get(names.TAG_STOP_REASON) for trial, run in children.items()}
    assert reasons["good"] is None
    assert reasons["early"] == "stopped early by the scheduler after epoch 1 of 3"
    assert reasons["nan"].startswith("non-finite metric: the trial reported nonfinite=1 at "
                                     "epoch 2")
    assert reasons["broken"] == "error: RuntimeError: boom"


def test_best_checkpoint_is_the_best_epoch_without_optimizer_state(scripted, tmp_path):
    client = client_for(scripted["uri"])
    run = children_by_trial(client, scripted["parent"])["good"]
    files = sorted(a.path for a in client.list_artifacts(run.info.run_id, "checkpoints/best"))
    assert files == ["checkpoints/best/calibration.json", "checkpoints/best/config.json",
                     "checkpoints/best/model.safetensors"]
    local = client.download_artifacts(run.info.run_id, "checkpoints/best", str(tmp_path))
    restored = vae.load(local)
    val = scripted["val"]
    np.testing.assert_array_equal(outputs(restored, val),
                                  outputs(scripted["models"]["good", 2], val))
    assert run.data.tags[names.TAG_BEST_EPOCH] == "2"
    assert float(run.data.tags[names.TAG_BEST_OBJECTIVE]) == 0.8


def test_probe_picture_on_every_trial_with_a_checkpoint(scripted, tmp_path):
    client = client_for(scripted["uri"])
    for trial, run in children_by_trial(client, scripted["parent"]).items():
        listed = [a.path for a in client.list_artifacts(run.info.run_id, "probe")]
        assert listed == ["probe/probe.png"], trial
    run = children_by_trial(client, scripted["parent"])["good"]
    with Image.open(client.download_artifacts(run.info.run_id, "probe/probe.png",
                                              str(tmp_path))) as picture:
        # 4 probe columns (2 normal + 2 defect) of 160 px tiles + gaps, 4 rows, colour bars.
        assert picture.size == (150 + 4 * 164 + 70, 26 + 64 + 4 * 164)
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    # Decided against the checkpoint's calibrated threshold: some verdict is printed.
    verdicts = [colour for colour in (ACCEPT, REJECT, WRONG)
                if (pixels == np.array(colour, np.uint8)).all(axis=1).any()]
    assert verdicts, "no accept/reject caption: the probe was drawn without the calibration"


def test_parent_summary_table_and_plot(scripted, tmp_path):
    client = client_for(scripted["uri"])
    listed = sorted(a.path for a in client.list_artifacts(scripted["parent"], "summary"))
    assert listed == ["summary/search_summary.png", "summary/trials.csv", "summary/trials.html"]
    table = Path(client.download_artifacts(scripted["parent"], "summary/trials.csv",
                                           str(tmp_path))).read_text().splitlines()
    assert len(table) == 1 + len(SCRIPT)
    rows = [line.split(",") for line in table[1:]]
    assert [row[0] for row in rows] == ["good", "broken", "early", "nan"]  # best first
    assert [row[2] for row in rows] == ["FINISHED", "FAILED", "FINISHED", "FAILED"]


def test_champion_is_the_best_eligible_trial_with_description(scripted):
    client = client_for(scripted["uri"])
    version = client.get_model_version_by_alias("aitex-vae", "champion")
    good = children_by_trial(client, scripted["parent"])["good"]
    assert version.run_id == good.info.run_id
    assert scripted["outcome"].champion_trial_id == "good"
    assert scripted["outcome"].failures == []
    assert "val/objective = 0.8000 at epoch 2" in version.description
    assert '"latent_dim": 4' in version.description
    assert good.info.status == "FINISHED"  # logging the model into it kept its status


def test_registered_pyfunc_scores_like_vae_score_and_has_no_pickle(scripted, tmp_path):
    with global_tracking_uri(scripted["uri"]):  # what a downstream user does, then put back
        model_dir = mlflow.artifacts.download_artifacts("models:/aitex-vae@champion",
                                                        dst_path=str(tmp_path / "model"))
        pyfunc = mlflow.pyfunc.load_model("models:/aitex-vae@champion")
    assert find_pickles(model_dir) == []
    assert not list(Path(model_dir).rglob("python_model.pkl"))
    assert (Path(model_dir) / "artifacts" / "weights" / "model.safetensors").is_file()
    val = scripted["val"]
    expected, _ = score_patches(scripted["models"]["good", 2], val, keep_maps=False)
    np.testing.assert_allclose(pyfunc.predict(val), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(MlflowException, match="uint8"):  # the signature: uint8 patches only
        pyfunc.predict(val.astype(np.float64) / 255.0)
    with pytest.raises(MlflowException, match="shape"):
        pyfunc.predict(val[:, 0])  # (N, H, W): the channel axis is part of the contract
    decided = pyfunc.predict(val, params={"decisions": True})
    assert decided["decision"] == list(np.asarray(decided["score"]) > decided["threshold"])


def test_the_champion_model_has_a_signature_an_input_example_and_its_metrics(scripted,
                                                                              tmp_path):
    client = client_for(scripted["uri"])
    with global_tracking_uri(scripted["uri"]):
        info = mlflow.models.get_model_info("models:/aitex-vae@champion")
        model_dir = mlflow.artifacts.download_artifacts("models:/aitex-vae@champion",
                                                        dst_path=str(tmp_path / "model"))
        pyfunc = mlflow.pyfunc.load_model("models:/aitex-vae@champion")
    val, labels = scripted["val"], scripted["labels"]
    (images,) = info.signature.inputs.inputs
    assert (images.type, images.shape) == (np.dtype(np.uint8), (-1, *val.shape[1:]))
    (scores,) = info.signature.outputs.inputs
    assert (scores.type, scores.shape) == (np.dtype(np.float32), (-1,))
    assert [(p.name, p.default) for p in info.signature.params.params] == [("decisions", False)]
    # The input example: one normal and one defective validation patch, as stored.
    example = Model.load(model_dir).load_input_example(model_dir)
    probe = scripted["tracker"].probe
    normal, defect = (int(np.flatnonzero(probe.labels == k)[0]) for k in (0, 1))
    np.testing.assert_array_equal(example, probe.images[[normal, defect]])
    assert example.dtype == np.uint8 and set(labels[probe.indices[[normal, defect]]]) == {0, 1}
    expected, _ = score_patches(scripted["models"]["good", 2], example, keep_maps=False)
    np.testing.assert_allclose(pyfunc.predict(example), expected, rtol=1e-6, atol=1e-7)
    # The logged model carries the champion's metrics at its best epoch (2), and the run's
    # history gained no duplicate point (test_one_metric_value_per_epoch... checks the run).
    metrics = {m.key: (m.value, m.step) for m in client.get_logged_model(info.model_id).metrics}
    assert metrics["val/auroc"] == (0.8, 2) and metrics["train/loss"] == (50.0, 2)
    assert metrics["val/objective"] == (0.8, 2)


def test_pull_rebuilds_the_champion_with_its_calibration(scripted, tmp_path):
    pulled = pull("models:/aitex-vae@champion", tmp_path / "pulled",
                  tracking_uri=scripted["uri"])
    assert sorted(p.name for p in pulled.path.iterdir()) == [
        "calibration.json", "config.json", "model.safetensors"]
    val, labels = scripted["val"], scripted["labels"]
    best = scripted["models"]["good", 2]
    np.testing.assert_array_equal(outputs(vae.load(pulled.path), val), outputs(best, val))
    scores, _ = score_patches(best, val, keep_maps=False)
    calibration = json.loads((pulled.path / "calibration.json").read_text())
    assert calibration["threshold"] == pytest.approx(
        Calibration.fit(scores[labels == 0]).threshold, rel=1e-6)


def test_a_new_driver_continues_the_same_runs_without_duplicate_epochs(tmp_path,
                                                                      tmp_path_factory):
    """Driver 1 dies mid-search (no end); driver 2 (a restored callback: same search id) goes on:
    Tune retries epoch 2 of trial A from its epoch-1 checkpoint and forgot trial B."""
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp())
    config = tiny_config(**{"train.num_epochs": 4}).flat()

    def result(epoch: int, auroc: float) -> dict:
        return {"epoch": epoch, "val/objective": auroc, "val/auroc": auroc,
                "train/loss": 1.0 / epoch}

    first = SearchTracker(TrackingSettings(tracking_uri=uri), "resumable")
    parent = first.start_search({"num_samples": 2}, search_id="sid-resume")
    first.start_trial("A", config)
    first.log_result("A", result(1, 0.5))
    first.log_result("A", result(2, 0.6))
    first.start_trial("B", config)
    first.log_result("B", result(1, 0.4))
    first.writer.flush()  # what reached the store before the kill
    first.writer.close()  # the driver is gone; its tracker never ends the search

    second = SearchTracker(TrackingSettings(tracking_uri=uri), "resumable")
    assert second.start_search({"num_samples": 2}, search_id="sid-resume") == parent
    second.start_trial("A", config)
    for epoch, auroc in [(2, 0.65), (3, 0.7), (4, 0.75)]:  # epoch 2 again: retried
        second.log_result("A", result(epoch, auroc))
    second.end_trial("A")
    outcome = second.end_search(register=False, known_trials=["A"])
    second.close()

    client = client_for(uri)
    runs = client.search_runs([client.get_run(parent).info.experiment_id])
    assert len(runs) == 3 and outcome.failures == []
    children = children_by_trial(client, parent)
    history = client.get_metric_history(children["A"].info.run_id, "val/auroc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.6), (3, 0.7), (4, 0.75)]
    assert children["A"].info.status == "FINISHED"
    assert children["B"].info.status == "KILLED"
    assert children["B"].data.tags[names.TAG_STOP_REASON].startswith("lost by Tune")
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_strip_reference_trials_probe_is_decided_on_its_own_validation_scores(
        tmp_path, tmp_path_factory):
    """The staged checkpoint drops val_scores.npy, so the tracker keeps the probe's share of
    them: a strip-reference model cannot score the probe patches apart from their strips."""
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp())
    images, labels = validation_set()
    probe = choose_probe(images, labels, per_class=2)
    tracker = SearchTracker(TrackingSettings(tracking_uri=uri), "reference-probe", probe=probe,
                            validation_labels=labels)
    parent = tracker.start_search({})
    config = tiny_config(**{"score.reference": "strip_peak"})
    tracker.start_trial("A", config.flat())
    tracker.log_result("A", {"epoch": 1, "val/objective": 0.9, "val/auroc": 0.9})
    model = make_model(config, seed=2)
    # Scores a strip reference could have given: defects high, normal patches spread below.
    scores = np.where(labels == 1, 5.0, np.linspace(0.0, 1.0, len(labels))).astype(np.float32)
    optimizer = torch.optim.Adam(model.parameters())
    tracker.log_checkpoint("A", checkpoint.write(tmp_path / "ckpt", model, optimizer, 1,
                                                 {"val/auroc": 0.9}, scores))
    tracker.end_trial("A")
    tracker.end_search(register=False, known_trials=["A"])
    tracker.close()
    client = client_for(uri)
    run = children_by_trial(client, parent)["A"]
    with Image.open(client.download_artifacts(run.info.run_id, "probe/probe.png",
                                              str(tmp_path))) as picture:
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    # Both defects are above the calibrated threshold (normal quantile ≤ 1 < 5): rejected.
    assert (pixels == np.array(REJECT, np.uint8)).all(axis=1).any()
    assert not (pixels == np.array(WRONG, np.uint8)).all(axis=1).any()


def _one_trial_search(tmp_path, tmp_path_factory, name: str):
    """A started search on a fresh SQLite store with trial "A" started: (uri, tracker, parent
    run id, validation images)."""
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp())
    images, labels = validation_set()
    tracker = SearchTracker(TrackingSettings(tracking_uri=uri), name, validation_labels=labels)
    parent = tracker.start_search({})
    tracker.start_trial("A", tiny_config().flat())
    return uri, tracker, parent, images


def test_a_failing_registration_is_reported_and_the_parent_still_ends(tmp_path,
                                                                      tmp_path_factory):
    uri, tracker, parent, images = _one_trial_search(tmp_path, tmp_path_factory, "unregistrable")
    config = tiny_config()
    tracker.log_result("A", {"epoch": 1, "val/objective": 0.7, "val/auroc": 0.7})
    model = make_model(config, seed=1)
    tracker.log_checkpoint("A", write_checkpoint(tmp_path / "ckpt", model, 1, {}, images))
    tracker.end_trial("A")
    tracker.writer.flush()  # the checkpoint is staged on the writer thread
    # A pickle where the champion's weights are read from: registration must refuse it.
    (tracker.trials["A"].staged / "sneaky.pkl").write_bytes(b"\x80\x04N.")
    outcome = tracker.end_search()
    tracker.close()
    assert outcome.champion is None
    assert any(f.startswith("registration of the champion: UnsafeArtifactError")
               for f in outcome.failures), outcome.failures
    client = client_for(uri)
    assert client.get_run(parent).info.status == "FINISHED"
    assert client.search_registered_models() == []


def test_a_checkpoint_is_fetched_on_the_writer_thread_and_a_superseded_one_is_skipped(
        tmp_path, tmp_path_factory):
    """Tune's event loop only queues the upload: the copy runs later, on the writer thread. A
    checkpoint Tune deleted for a better one is skipped; the best one missing is a failure."""
    uri, tracker, parent, images = _one_trial_search(tmp_path, tmp_path_factory, "fetching")
    config = tiny_config()
    release, fetched_on = threading.Event(), []
    source = write_checkpoint(tmp_path / "e2", make_model(config, seed=2), 2, {}, images)

    def deleted_by_tune(folder: Path) -> None:
        release.wait(timeout=30)
        raise FileNotFoundError("deleted")

    def slow_copy(folder: Path) -> None:
        fetched_on.append(threading.current_thread().name)
        copy_for_pull(None, str(source), folder)

    tracker.log_result("A", {"epoch": 1, "val/objective": 0.6, "val/auroc": 0.6})
    assert tracker.log_checkpoint("A", deleted_by_tune) is True  # returns while fetch waits
    tracker.log_result("A", {"epoch": 2, "val/objective": 0.8, "val/auroc": 0.8})
    assert tracker.log_checkpoint("A", slow_copy) is True
    release.set()
    tracker.writer.flush()
    assert fetched_on and fetched_on[0].startswith("mlflow-writer")
    assert tracker.writer.failures == []  # epoch 1 was superseded: skipped, not a failure
    staged = tracker.trials["A"].staged
    assert staged.name == "e2" and {p.name for p in staged.iterdir()} == {
        "model.safetensors", "config.json", "calibration.json"}

    def missing(folder: Path) -> None:
        raise FileNotFoundError("checkpoint gone")

    tracker.log_result("A", {"epoch": 3, "val/objective": 0.9, "val/auroc": 0.9})
    tracker.log_checkpoint("A", missing)  # the best itself is gone: that is reported
    tracker.writer.flush()
    assert tracker.writer.failures == [
        "upload best checkpoint of trial A (epoch 3): FileNotFoundError: checkpoint gone"]
    assert tracker.trials["A"].staged == staged  # the record still names what was uploaded
    tracker.end_trial("A")
    tracker.end_search()
    tracker.close()
    run = children_by_trial(client_for(uri), parent)["A"]
    listed = client_for(uri).list_artifacts(run.info.run_id, names.BEST_CHECKPOINT_PATH)
    assert {Path(f.path).name for f in listed} == {"model.safetensors", "config.json",
                                                   "calibration.json"}


@pytest.mark.slow
@pytest.mark.parametrize("scripted", ["server"], indirect=True)  # served once, from the server
def test_mlflow_models_serve_answers_with_the_same_scores(scripted, tmp_path):
    """The registered pyfunc behind ``mlflow models serve`` (local env, as a downstream user)."""
    assert scripted["uri"].startswith("http")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": scripted["uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m",
               "models:/aitex-vae@champion", "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        val = scripted["val"]
        body = json.dumps({"inputs": val.tolist()}).encode()
        deadline = time.monotonic() + 90
        while True:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "serve.log").read_text()[-3000:]
                time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    expected, _ = score_patches(scripted["models"]["good", 2], val, keep_maps=False)
    np.testing.assert_allclose(answer["predictions"], expected, rtol=1e-6, atol=1e-7)
