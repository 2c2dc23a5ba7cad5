"""The documented autoscaling cluster runs a search: Ray's own autoscaler (v2, with its fake
multi-node provider: worker nodes are real raylets on this machine) scales GPU workers up from
zero for `aitexvae tune --address auto --gpus-per-trial 0.25`, the trials run there, a worker
killed mid-trial is replaced and its trials resume from their checkpoints on the replacement, the
champion is registered in a real `mlflow server`, and the workers scale back down when idle.

The node types are cluster.yaml's own (head resources, worker resources, min workers), so the
file users launch and the cluster tested here cannot drift. Two changes for one small machine,
both said here: at most 2 workers (cluster.yaml allows 4), and an idle timeout of 0.25 min
(cluster.yaml: 5) so scale-down is seen within the test. The "GPU" is a resource the fake
worker declares; torch trains on the CPU there, as on any node without CUDA.

Why v2 and this provider form (Ray 2.60 wheel): autoscaler v1 never replaces a lost fake node
(the provider's tags are read-only, so it stays "uninitialized" and v1 only terminates
"up-to-date" nodes that lost contact); v2 sees the dead raylet and replaces the instance. v2
needs the head's RAY_CLOUD_INSTANCE_ID and node id set to the provider's head id, and the
provider named as an "external" module: type "fake_multinode" makes the v2 monitor read
fake_multi_node/example.yaml, which the wheel does not ship (the monitor exits and takes the
head's `ray start --block` down).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.support.mlflow_server import mlflow_server
from tests.support.ray_cluster import LAUNCHED_NODE_VAR, LocalRayCluster

pytestmark = pytest.mark.slow

AITEXVAE = str(Path(sys.executable).with_name("aitexvae"))
CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
TEST_MAX_WORKERS, TEST_IDLE_MINUTES = 2, 0.25
MAX_EPOCHS = 8  # trials must still be running when their node is killed after a checkpoint
PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider"
HEAD_ID = "f" * 51 + "00000"  # the provider's FAKE_HEAD_NODE_ID
HEAD_ENV = {"RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": HEAD_ID,
            LAUNCHED_NODE_VAR: HEAD_ID}


def fake_autoscaling_config(gcs_address: str) -> dict:
    """cluster.yaml's node types for Ray's fake multi-node provider (see the module doc)."""
    real = yaml.safe_load(CLUSTER_YAML.read_text())
    head = real["head_node_type"]
    types = {"ray.head.default": {"resources": real["available_node_types"][head]["resources"],
                                  "node_config": {}, "max_workers": 0}}
    for name, spec in real["available_node_types"].items():
        if name != head:
            types[name] = {"resources": spec["resources"], "node_config": {},
                           "min_workers": spec.get("min_workers", 0),
                           "max_workers": min(spec["max_workers"], TEST_MAX_WORKERS)}
    return {"cluster_name": "aitexvae-fake", "max_workers": TEST_MAX_WORKERS,
            "upscaling_speed": real.get("upscaling_speed", 1.0),
            "idle_timeout_minutes": TEST_IDLE_MINUTES,
            "provider": {"type": "external", "module": f"{PROVIDER}.FakeMultiNodeProvider",
                         "launch_multiple": True, "head_node_id": HEAD_ID,
                         "gcs_address": gcs_address, "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True},
            "auth": {"ssh_user": "ubuntu"}, "docker": {}, "head_node_type": "ray.head.default",
            "available_node_types": types, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": []}


def _alive(cluster: LocalRayCluster) -> int:
    return cluster.cluster_state()["alive_nodes"]


def _trial_rows(experiment: Path) -> dict[str, list[dict]]:
    rows = {}
    for path in experiment.glob("trial_*/result.json"):
        # Only whole lines: Ray may be writing the last one while the watcher reads.
        lines = path.read_text().split("\n")[:-1]
        rows[path.parent.name] = [json.loads(line) for line in lines if line.strip()]
    return rows


class NodeWatch:
    """Which launched node ran each reported epoch, read from the trial process while it runs."""

    def __init__(self, cluster: LocalRayCluster, experiment: Path) -> None:
        self.cluster, self.experiment = cluster, experiment
        self.node_of_pid: dict[int, str | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> NodeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.look()

    def look(self) -> dict[str, list[dict]]:
        rows = _trial_rows(self.experiment)
        for trial_rows in rows.values():
            for row in trial_rows:
                if self.node_of_pid.get(row["pid"]) is None:
                    self.node_of_pid[row["pid"]] = self.cluster.launched_node_of_pid(row["pid"])
        return rows

    def nodes(self, trial_rows: list[dict]) -> list[str | None]:
        return [self.node_of_pid.get(row["pid"]) for row in trial_rows]


def test_a_search_scales_gpu_workers_from_zero_survives_a_lost_worker_and_scales_down(tmp_path):
    real = yaml.safe_load(CLUSTER_YAML.read_text())
    head_cpus = int(real["available_node_types"][real["head_node_type"]]["resources"]["CPU"])
    assert head_cpus == 0  # the case this test is about: no trial fits the head
    cluster = LocalRayCluster(num_nodes=1, head_cpus=head_cpus, head_env=HEAD_ENV,
                              autoscaling=fake_autoscaling_config)
    home = tmp_path / "home"  # the driver's ~, where the launcher leaves the bootstrap config
    home.mkdir()
    experiment = tmp_path / "ray_results" / "scaled"
    log = tmp_path / "tune.log"
    with cluster, mlflow_server(tmp_path / "mlflow") as server:
        shutil.copy(cluster.autoscaling_config_path, home / "ray_bootstrap_config.yaml")
        assert _alive(cluster) == 1  # only the head: no worker before the search asks
        env = {**cluster.driver_env(), "HOME": str(home), "AITEXVAE_HOME": str(tmp_path / "ah"),
               "MLFLOW_DISABLE_TELEMETRY": "true"}
        command = [AITEXVAE, "tune", "--name", "scaled", "--address", "auto", "--gpus-per-trial",
                   "0.25", "--cpus-per-trial", "1", "--num-samples", "4", "--max-epochs",
                   str(MAX_EPOCHS), "--image-size", "32", "--train-patches", "128",
                   "--scheduler", "fifo", "--max-failures", "2", "--tracking-uri", server.uri,
                   "--storage-path", str(tmp_path / "ray_results")]
        with open(log, "wb") as out, NodeWatch(cluster, experiment) as watch:
            driver = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      cwd=tmp_path, start_new_session=True)
            try:
                killed = _kill_a_worker_after_a_checkpoint(cluster, watch, driver, log)
                driver.wait(timeout=300)
            finally:
                if driver.poll() is None:
                    os.killpg(driver.pid, signal.SIGKILL)
                    driver.wait()
            rows = watch.look()
        output = log.read_text(errors="replace")
        assert driver.returncode == 0, output[-6000:]
        assert "waiting for the autoscaler to launch gpu_worker (4 CPU, 1 GPU)" in output
        assert "Search finished: 4 trials — 4 ok" in output, output[-4000:]

        # Every epoch ran on a launched worker (the head has no CPU for one) ...
        assert len(rows) == 4, sorted(rows)
        nodes = {trial: watch.nodes(trial_rows) for trial, trial_rows in rows.items()}
        assert all(node is not None for trial_nodes in nodes.values() for node in trial_nodes), \
            nodes
        # ... the trials on the killed worker resumed from their checkpoints on another one ...
        victims = [trial for trial, trial_nodes in nodes.items() if killed in trial_nodes]
        assert victims, nodes
        for trial in victims:
            trial_rows, trial_nodes = rows[trial], nodes[trial]
            before = [r for r, n in zip(trial_rows, trial_nodes, strict=True) if n == killed]
            after = [r for r, n in zip(trial_rows, trial_nodes, strict=True) if n != killed]
            assert before and after, (trial, trial_nodes)
            assert [r["epoch"] for r in before] == list(range(1, len(before) + 1)), trial
            # As in test_cluster_multinode: a node lost between result.json and the checkpoint's
            # registration resumes from the epoch before; no epoch after it is lost.
            (resumed_from,) = {r["resumed_from_epoch"] for r in after}
            assert len(before) - 1 <= resumed_from <= len(before), (trial, after)
            assert resumed_from >= 1, f"{trial} restarted from scratch, not its checkpoint"
            assert [r["epoch"] for r in after] == list(range(resumed_from + 1, MAX_EPOCHS + 1))
        for trial_rows in rows.values():
            assert trial_rows[-1]["epoch"] == MAX_EPOCHS
        # ... and MLflow tells the same story: every child FINISHED, the champion registered.
        client = MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)
        champion = client.get_model_version_by_alias("aitex-vae", "champion")
        parent_id = client.get_run(champion.run_id).data.tags["mlflow.parentRunId"]
        children = client.search_runs(
            [client.get_run(parent_id).info.experiment_id],
            f"tags.`mlflow.parentRunId` = '{parent_id}'")
        assert sorted(r.info.status for r in children) == ["FINISHED"] * 4
        assert client.get_run(parent_id).info.status == "FINISHED"
        # Idle workers go after the idle timeout (plus the autoscaler's update interval).
        deadline = time.monotonic() + TEST_IDLE_MINUTES * 60 + 90
        while _alive(cluster) > 1 and time.monotonic() < deadline:
            time.sleep(3)
        assert _alive(cluster) == 1, "the launched workers did not scale down when idle"


def _kill_a_worker_after_a_checkpoint(cluster: LocalRayCluster, watch: NodeWatch,
                                      driver: subprocess.Popen, log: Path) -> str:
    """Wait for a trial to report two epochs on a launched worker, then kill that whole node.

    Two, so that the first epoch's checkpoint is registered with Tune (see the race above) and
    the trial must resume from a checkpoint rather than from scratch.
    """
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            pytest.fail(f"search ended before a worker could be killed:\n"
                        f"{log.read_text(errors='replace')[-4000:]}")
        for trial, trial_rows in watch.look().items():
            on = watch.nodes(trial_rows)
            node = on[-1] if len(on) >= 2 and on[-1] == on[-2] else None
            if node and any((watch.experiment / trial).glob("checkpoint_*")):
                assert trial_rows[-1]["epoch"] < MAX_EPOCHS, f"{trial} finished before the kill"
                assert cluster.kill_launched_node(node) > 0
                return node
        time.sleep(0.2)
    pytest.fail(f"no trial checkpointed on a launched worker in time:\n"
                f"{log.read_text(errors='replace')[-4000:]}")
