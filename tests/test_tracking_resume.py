"""``aitexvae tune --resume`` after a SIGKILLed driver reuses the MLflow runs: one parent, one child
per trial, one metric value per epoch — no duplicates. Real processes: a `ray start` cluster
(so killing the driver leaves the cluster up), two `aitexvae tune` drivers, a SQLite store."""

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
from tracking import settings as names
from vae import keys

pytestmark = pytest.mark.slow

AITEXVAE = str(Path(sys.executable).with_name("aitexvae"))
MAX_EPOCHS = 4


def _epochs(trial_dir: Path) -> list[int]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["epoch"] for r in rows if "epoch" in r]


def _wait_until_one_finished_and_one_midway(experiment: Path, driver: subprocess.Popen,
                                            log: Path, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            raise AssertionError(f"driver exited early ({driver.returncode}):\n"
                                 f"{log.read_text()[-3000:]}")
        progress = [max(_epochs(d), default=0) for d in experiment.glob("trial_*")]
        if MAX_EPOCHS in progress and any(2 <= p < MAX_EPOCHS for p in progress):
            return
        time.sleep(0.2)
    raise AssertionError(f"no interruption point within {timeout_s}s:\n{log.read_text()[-3000:]}")


def _start_search(cluster, tmp_path: Path, name: str, common: list[str], **popen
                  ) -> tuple[subprocess.Popen, Path, dict]:
    """``aitexvae tune`` (3 trials x MAX_EPOCHS, one at a time) on ``cluster``, logging to a file."""
    env = {**cluster.driver_env(), "AITEXVAE_HOME": str(tmp_path / "home"),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen(
            [AITEXVAE, "tune", "--name", name, "--address", cluster.address,
             "--image-size", "32", "--num-samples", "3", "--max-epochs", str(MAX_EPOCHS),
             "--train-patches", "128", "--scheduler", "fifo", "--max-concurrent-trials", "1",
             *common], env=env, stdout=out, stderr=subprocess.STDOUT, **popen)
    return driver, log, env


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(names.DEFAULT_EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_resume_after_a_killed_driver_reuses_parent_and_child_runs(tmp_path, tmp_path_factory):
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp())
    storage = tmp_path / "ray_results"
    common = ["--storage-path", str(storage), "--tracking-uri", uri]
    with LocalRayCluster(num_nodes=1, num_cpus=2) as cluster:
        driver, log, env = _start_search(cluster, tmp_path, "resumed", common,
                                         start_new_session=True)
        try:
            _wait_until_one_finished_and_one_midway(storage / "resumed", driver, log)
            time.sleep(0.2)  # let the tracker's writer thread catch up with the last report
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)

        before = _runs(uri)
        parents = [r for r in before if r.data.tags.get(names.TAG_ROLE) == "search"]
        assert len(parents) == 1 and parents[0].info.status == "RUNNING"
        children_before = {r.data.tags[names.TAG_TRIAL_ID]: r.info.run_id for r in before
                           if r.data.tags.get(names.TAG_ROLE) == "trial"}
        # At least the finished trial and the interrupted one have runs (a third may have just
        # started when the driver was killed).
        assert len(children_before) >= 2

        resumed = subprocess.run([AITEXVAE, "tune", "--resume", "resumed", "--address",
                                  cluster.address, *common], env=env, capture_output=True,
                                 text=True, timeout=300)
        # 130 = "some trial did not finish" by the search's own count, which can misjudge a trial
        # that ended just before the kill (reported to the search owner); what MLflow holds is
        # checked against Tune's own record below.
        assert resumed.returncode in (0, 130), resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert "aitexvae pull --model-uri models:/aitex-vae@champion" in resumed.stdout

    after = _runs(uri)
    parents = [r for r in after if r.data.tags.get(names.TAG_ROLE) == "search"]
    children = [r for r in after if r.data.tags.get(names.TAG_ROLE) == "trial"]
    by_trial = {r.data.tags[names.TAG_TRIAL_ID]: r for r in children}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(by_trial) == len(children)  # one run per trial id: no duplicates
    ray_trials = {d.name.removeprefix("trial_") for d in (storage / "resumed").glob("trial_*")}
    assert set(by_trial) == ray_trials  # every trial Ray has a folder for, and no other
    for trial_id, run_id in children_before.items():
        assert by_trial[trial_id].info.run_id == run_id  # runs from before were continued
    # Each run mirrors what Tune recorded for its trial after the resume.
    recorded = {trial.trial_id: trial.status
                for trial in ExperimentAnalysis(str(storage / "resumed")).trials}
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for trial_id, run in by_trial.items():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, keys.VAL_AUROC)]
        assert steps == sorted(set(steps)), (trial_id, steps)  # one value per epoch
        reason = run.data.tags.get(names.TAG_STOP_REASON, "")
        if trial_id not in recorded:  # started just before the kill, missing from the snapshot
            assert run.info.status == "KILLED" and reason.startswith("lost by Tune"), trial_id
        elif recorded[trial_id] == "TERMINATED":
            assert run.info.status == "FINISHED", trial_id
            assert steps == list(range(1, MAX_EPOCHS + 1)), (trial_id, steps)
        else:  # e.g. Tune could not restore it from a checkpoint it had already deleted
            assert recorded[trial_id] == "ERROR" and run.info.status == "FAILED", trial_id
            assert reason.startswith("error: "), reason
    assert sum(status == "TERMINATED" for status in recorded.values()) >= 2
    champion = client.get_model_version_by_alias("aitex-vae", "champion")
    assert champion.run_id in {run.info.run_id for run in children}


def test_ctrl_c_leaves_mlflow_truthful_and_resume_finishes_the_search(tmp_path,
                                                                    tmp_path_factory):
    """SIGINT mid-trial (issue 11 item 2): the parent ends KILLED with its reason, no child stays
    RUNNING, no champion is registered for an unfinished search; --resume then finishes it."""
    uri = migrated_sqlite(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp())
    storage = tmp_path / "ray_results"
    common = ["--storage-path", str(storage), "--tracking-uri", uri]
    with LocalRayCluster(num_nodes=1, num_cpus=2) as cluster:
        driver, log, env = _start_search(cluster, tmp_path, "interrupted", common)
        try:
            _wait_until_one_finished_and_one_midway(storage / "interrupted", driver, log)
            driver.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
            code = driver.wait(timeout=120)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert code == 130, log.read_text()[-3000:]
        runs = _runs(uri)
        (parent,) = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "search"]
        children = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "trial"]
        assert parent.info.status == "KILLED"
        assert parent.data.tags.get(names.TAG_STOP_REASON, "").startswith("search ended"), \
            parent.data.tags
        assert children and all(r.info.status != "RUNNING" for r in children)
        assert any(r.info.status == "FINISHED" for r in children)  # the trial that completed
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        assert client.search_model_versions("name='aitex-vae'") == []  # no champion

        resumed = subprocess.run([AITEXVAE, "tune", "--resume", "interrupted", "--address",
                                  cluster.address, *common], env=env, capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    runs = _runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "search"]
    assert parent.info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" for r in runs)
    champion = client.get_model_version_by_alias("aitex-vae", "champion")
    assert champion.run_id in {r.info.run_id for r in runs}
