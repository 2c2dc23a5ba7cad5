"""The pre-flight resource check against what a cluster has *and* what its autoscaler may launch.

The node types come from ``cluster.yaml`` itself (the file users launch), so the check and the
documented cluster cannot drift: its head has ``CPU: 0`` and its GPU workers scale from 0, so a
fresh cluster has no node a trial fits until the autoscaler launches one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from ray.core.generated import autoscaler_pb2

from search import cluster
from search.cluster import ClusterError, ClusterInfo, NodeType, check_resources

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _documented_cluster() -> tuple[NodeType, tuple[NodeType, ...]]:
    """(the head as it runs, the worker types the autoscaler may launch) from cluster.yaml."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    resources = config["available_node_types"][config["head_node_type"]]["resources"]
    head = NodeType(config["head_node_type"], float(resources.get("CPU", 0)),
                    float(resources.get("GPU", 0)), 0)
    return head, cluster.node_types_of(str(CLUSTER_YAML))


def _info(running: tuple[NodeType, ...], launchable: tuple[NodeType, ...] = ()) -> ClusterInfo:
    return ClusterInfo(address="auto", nodes=len(running), cpus=sum(n.cpus for n in running),
                       gpus=sum(n.gpus for n in running),
                       max_node_cpus=max((n.cpus for n in running), default=0.0),
                       running=running, launchable=launchable)


def _settings(cpus: float = 1.0, gpus: float | None = None):
    return SimpleNamespace(cpus_per_trial=cpus, gpus_per_trial=gpus)


def test_the_documented_cluster_accepts_fractional_gpu_trials_before_any_worker_runs(caplog):
    head, workers = _documented_cluster()
    assert head.cpus == 0 and any(w.gpus >= 1 for w in workers)  # what cluster.yaml says
    fresh = _info((head,), workers)  # only the head is up
    with caplog.at_level(logging.WARNING, logger="search.cluster"):
        assert check_resources(fresh, _settings(1.0, 0.25)) == 0.25
    assert "waiting for the autoscaler to launch gpu_worker (4 CPU, 1 GPU)" in caplog.text
    assert check_resources(fresh, _settings(1.0, None)) == 1.0  # GPUs can be launched: 1 each


def test_a_request_no_node_type_can_satisfy_fails_naming_the_types():
    head, workers = _documented_cluster()
    with pytest.raises(ClusterError, match=r"--cpus-per-trial=8 --gpus-per-trial=0.25 fit no "
                                           r"node: .* may launch: gpu_worker \(4 CPU, 1 GPU\)"):
        check_resources(_info((head,), workers), _settings(8.0, 0.25))


def test_a_fractional_gpu_on_a_cpu_only_cluster_is_refused_and_none_means_cpu():
    cpu_only = _info((NodeType("head", 4, 0, 0),), (NodeType("cpu_worker", 8, 0, 3),))
    with pytest.raises(ClusterError, match=r"--gpus-per-trial=0.25 but the cluster has no GPU "
                                           r"and can launch none"):
        check_resources(cpu_only, _settings(1.0, 0.25))
    assert check_resources(cpu_only, _settings(1.0, None)) == 0.0
    assert check_resources(cpu_only, _settings(6.0, 0)) == 0.0  # fits the launchable type only


def test_a_live_node_that_fits_needs_no_autoscaler(caplog):
    live = _info((NodeType("node", 2, 1, 0),))
    with caplog.at_level(logging.WARNING, logger="search.cluster"):
        assert check_resources(live, _settings(2.0, 0.5)) == 0.5
    assert caplog.text == ""


def test_launchable_types_are_read_from_the_autoscalers_cluster_config(monkeypatch):
    """The GCS holds what the autoscaler reported; a real one is not started here (the
    autoscaling test does that), so the report is built as the autoscaler builds it."""
    import ray._private.state

    config = autoscaler_pb2.ClusterConfig()
    for name, resources, max_count in [("head", {"CPU": 0}, 0),
                                       ("gpu_worker", {"CPU": 4, "GPU": 1}, 4),
                                       ("cpu_worker", {"CPU": 8}, -1)]:
        group = config.node_group_configs.add(name=name, max_count=max_count)
        group.resources.update(resources)
    monkeypatch.setattr(ray._private.state.state, "get_cluster_config", lambda: config)
    assert cluster.launchable_node_types() == (NodeType("gpu_worker", 4, 1, 4),
                                               NodeType("cpu_worker", 8, 0, -1))
    monkeypatch.setattr(ray._private.state.state, "get_cluster_config", lambda: None)
    assert cluster.launchable_node_types() == ()


def test_node_types_without_declared_resources_are_not_refused(tmp_path, caplog):
    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text(json.dumps({"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "big": {"node_config": {"InstanceType": "g6.12xlarge"}, "max_workers": 2},
        "never": {"resources": {"CPU": 64}, "max_workers": 0}}}))
    types = cluster.node_types_of(str(config))
    assert [t.name for t in types] == ["big"]  # head and max_workers 0 are never launched
    assert check_resources(_info((NodeType("head", 0, 0, 0),), types), _settings(8, 2)) == 2.0
    config.write_text("available_node_types: [not, a, mapping]\n")
    with caplog.at_level(logging.WARNING, logger="search.cluster"):
        assert cluster.node_types_of(str(config)) == ()
    assert "cannot read the node types of" in caplog.text
    assert cluster.node_types_of(str(tmp_path / "absent.yaml")) == ()


def test_a_search_waiting_for_its_first_trial_says_how_long_every_30_s(caplog):
    import pickle

    from search.waiting import FirstTrialWait

    now = [100.0]
    wait = FirstTrialWait(every_s=30, clock=lambda: now[0])
    pending = [SimpleNamespace(status="PENDING")] * 4
    with caplog.at_level(logging.WARNING, logger="search.waiting"):
        for step in range(0, 95, 5):  # Tune's loop, every 5 s, nothing placed yet
            now[0] = 100.0 + step
            wait.on_step_begin(step, pending)
        now[0] = 200.0
        wait.on_step_begin(99, [SimpleNamespace(status="RUNNING"), *pending[1:]])
        now[0] = 300.0
        wait.on_step_begin(100, pending)  # after the first start: silent for good
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[0] for line in lines] == [
        "no trial has started after 30 s", "no trial has started after 60 s",
        "no trial has started after 90 s", "the first trial started after 100 s of waiting"]
    restored = pickle.loads(pickle.dumps(wait))  # as Tune pickles callbacks into tuner.pkl
    assert restored.every_s == 30 and restored.started_at is None and not restored.done
