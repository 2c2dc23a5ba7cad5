"""A search whose driver is SIGKILLed resumes with `aitexvae tune --resume NAME` and completes:
finished trials stay finished, the interrupted one continues from its last checkpoint, no epoch
is lost and none before that checkpoint is redone. Real processes: a `ray start` cluster (so
killing the driver leaves the cluster up) and two `aitexvae tune` driver processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.tune import ExperimentAnalysis

from tests.support.mlflow_server import migrated_sqlite
from tests.support.ray_cluster import LocalRayCluster
from tracking.settings import TAG_ROLE

pytestmark = pytest.mark.slow

AITEXVAE = str(Path(sys.executable).with_name("aitexvae"))
MAX_EPOCHS = 4


def _epochs(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "epoch" in r]


def _wait_for_interruption_point(experiment: Path, driver: subprocess.Popen, log: Path,
                                 timeout_s: float = 240.0) -> None:
    """Until one trial has finished and another is part-way (>= 2 epochs, not done)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            raise AssertionError(f"driver exited early ({driver.returncode}):\n"
                                 f"{log.read_text()[-3000:]}")
        progress = [max((r["epoch"] for r in _epochs(d)), default=0)
                    for d in experiment.glob("trial_*")]
        if MAX_EPOCHS in progress and any(2 <= p < MAX_EPOCHS for p in progress):
            return
        time.sleep(0.2)
    raise AssertionError(f"no interruption point within {timeout_s}s:\n{log.read_text()[-3000:]}")


def test_a_killed_driver_resumes_and_completes_without_losing_or_redoing_epochs(tmp_path):
    storage = tmp_path / "ray_results"
    experiment = storage / "killed-driver"
    common = ["--storage-path", str(storage), "--no-tracking"]
    with LocalRayCluster(num_nodes=1, num_cpus=2) as cluster:
        env = {**cluster.driver_env(), "AITEXVAE_HOME": str(tmp_path / "home")}
        log = tmp_path / "driver1.log"
        with open(log, "wb") as out:
            driver = subprocess.Popen(
                [AITEXVAE, "tune", "--name", "killed-driver", "--address", cluster.address,
                 "--image-size", "32", "--num-samples", "3", "--max-epochs", str(MAX_EPOCHS),
                 "--train-patches", "256", "--scheduler", "fifo", "--max-concurrent-trials", "1",
                 *common], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            _wait_for_interruption_point(experiment, driver, log)
        finally:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)

        before = {d.name: _epochs(d) for d in experiment.glob("trial_*")}
        # What Tune recorded before the kill: the checkpoint each trial resumes from, its latest
        # (not get_last_checkpoint, the newest of the num_to_keep *best* by val/objective, which
        # is older whenever the latest scored below them).
        analysis = ExperimentAnalysis(str(experiment))
        recorded = {}
        for trial in analysis.trials:
            state = json.loads(Path(trial.checkpoint.path, "state.json").read_text())
            recorded[f"trial_{trial.trial_id}"] = state["epoch"]

        resumed = subprocess.run([AITEXVAE, "tune", "--resume", "killed-driver", "--address",
                                  cluster.address, *common], env=env, capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "Winner: trial" in resumed.stdout

    after = {d.name: _epochs(d) for d in experiment.glob("trial_*")}
    assert len(after) == 3  # the trial never started before the kill ran after the resume
    finished = [name for name, rows in before.items() if rows[-1]["epoch"] == MAX_EPOCHS]
    interrupted = [name for name, rows in before.items() if rows[-1]["epoch"] < MAX_EPOCHS]
    assert finished and len(interrupted) == 1
    for name in finished:
        assert after[name] == before[name]  # finished trials stay finished
    (name,) = interrupted
    checkpoint_epoch = recorded[name]
    new_rows = after[name][len(before[name]):]
    assert new_rows, "the interrupted trial did not continue"
    assert {r["resumed_from_epoch"] for r in new_rows} == {checkpoint_epoch}
    # Continued right after its last checkpoint: no epoch lost, none before it redone.
    assert [r["epoch"] for r in new_rows] == list(range(checkpoint_epoch + 1, MAX_EPOCHS + 1))
    # Snapshots keep up with the epochs: the launcher snapshots every second and Tune forces one
    # whenever a trial has checkpointed num_to_keep (2) times since the last.
    assert before[name][-1]["epoch"] - checkpoint_epoch <= 2
    for rows in after.values():
        assert sorted({r["epoch"] for r in rows}) == list(range(1, MAX_EPOCHS + 1))


def _params(experiment: Path) -> list[dict]:
    return [json.loads((d / "params.json").read_text()) for d in experiment.glob("trial_*")
            if (d / "params.json").is_file()]


@pytest.mark.parametrize("kill_when", ["tuner.pkl", "aitexvae_search.json"])
def test_a_driver_killed_before_tunes_first_snapshot_resumes_the_saved_search(
        tmp_path, tmp_path_factory, kill_when):
    """Between the saved settings (or tuner.pkl) and Tune's first experiment snapshot there is
    nothing for Tuner.restore to continue: it used to start a different search from the
    built-in defaults (256 px), whose every trial failed. Resume starts the saved one over."""
    storage = tmp_path / "ray_results"
    experiment = storage / "early"
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp())
    common = ["--storage-path", str(storage), "--tracking-uri", uri]
    with LocalRayCluster(num_nodes=1, num_cpus=2) as cluster:
        env = {**cluster.driver_env(), "AITEXVAE_HOME": str(tmp_path / "home"),
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        driver = subprocess.Popen(
            [AITEXVAE, "tune", "--name", "early", "--address", cluster.address, "--image-size",
             "32", "--num-samples", "2", "--max-epochs", "2", "--train-patches", "128",
             "--scheduler", "fifo", "--max-concurrent-trials", "1", *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not (experiment / kill_when).exists():
                assert driver.poll() is None and time.monotonic() < deadline, "no launch seen"
                time.sleep(0.01)
        finally:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        assert not list(experiment.glob("experiment_state-*.json")), \
            "killed too late: Tune had snapshotted (the case the other test covers)"
        resumed = subprocess.run([AITEXVAE, "tune", "--resume", "early", "--address",
                                  cluster.address, *common], env=env, capture_output=True,
                                 text=True, timeout=300)
    output = resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert resumed.returncode == 0, output
    assert "starting the saved search over" in resumed.stderr
    assert "Search finished: 2 trials — 2 ok" in resumed.stdout, output
    finished = _params(experiment)
    assert len(finished) >= 2 and {p["model.image_size"] for p in finished} == {32}
    assert {p["train.num_epochs"] for p in finished} == {2}
    # MLflow tells the same story: one parent (reused if the dead driver had opened it),
    # FINISHED, with two FINISHED children and a champion.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == "search"]
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert client.get_model_version_by_alias("aitex-vae", "champion").run_id in {
        c.info.run_id for c in children}


def test_a_search_that_starts_over_refuses_a_space_file_edited_since_its_launch(tmp_path):
    from search.launcher import SearchError, _saved_space, _space_for
    from search.settings import SETTINGS_FILE, SearchSettings

    space_file = tmp_path / "space.yaml"
    space_file.write_text("model.latent_dim: {choice: [4, 8]}\n")
    settings = SearchSettings(name="early", image_size=32, space_file=str(space_file))
    saved = {"settings": settings.to_dict(), "space": _space_for(settings).describe()}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(saved))
    assert _saved_space(str(tmp_path), settings).describe() == saved["space"]  # unchanged: ok
    space_file.write_text("model.latent_dim: {choice: [16, 32]}\n")
    with pytest.raises(SearchError, match=r"cannot resume 'early'.*search space now differs"):
        _saved_space(str(tmp_path), settings)


@pytest.mark.parametrize("content", ["not json", "[1]", '{"space": null}'])
def test_a_damaged_settings_file_is_one_line_naming_it(tmp_path, content):
    from search import launcher
    from search.settings import SETTINGS_FILE, SearchSettings

    (tmp_path / "x").mkdir(mode=0o700)
    (tmp_path / "x" / SETTINGS_FILE).write_text(content)
    with pytest.raises(launcher.SearchError, match=r"cannot resume from .*aitexvae_search.json: "
                                                   r"it is not the settings file a search "
                                                   r"writes"):
        launcher.prepare(SearchSettings(name="x", storage_path=str(tmp_path), tracking=False),
                         resume=True)
