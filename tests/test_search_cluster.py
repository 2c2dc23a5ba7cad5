"""Joining a cluster: a multi-node cluster with a local storage path is warned about clearly, a
trial that cannot fit on a node fails before any trial, an unreachable address fails in seconds."""

from __future__ import annotations

import textwrap
import time

import pytest
import ray

from search import cli
from tests.support.ray_cluster import LocalRayCluster, free_port

pytestmark = pytest.mark.slow

PREPARE = textwrap.dedent("""\
    import logging, sys
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from search import launcher
    from search.settings import SearchSettings
    common = dict(address={address!r}, image_size=32, storage_path={storage!r}, tracking=False)
    prepared = launcher.prepare(SearchSettings(**common))
    print("NODES", prepared.cluster.nodes, "CPUS", prepared.cluster.cpus, flush=True)
    try:
        launcher.prepare(SearchSettings(cpus_per_trial=2, **common))
    except launcher.SearchError as error:
        print("REFUSED", error, flush=True)
    """)


def test_multi_node_cluster_with_local_storage_is_warned_about_and_oversized_trials_refused(
        tmp_path):
    with LocalRayCluster(num_nodes=2, num_cpus=1) as cluster:
        env = {**cluster.driver_env(), "AITEXVAE_HOME": str(tmp_path / "home")}
        done = cluster.run_driver(PREPARE.format(address=cluster.address,
                                                 storage=str(tmp_path / "ray_results")),
                                  env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "NODES 2 CPUS 2.0" in done.stdout
    assert "this Ray cluster has 2 nodes but --storage-path" in done.stderr
    assert "is a local directory" in done.stderr and "s3://" in done.stderr
    assert ("REFUSED --cpus-per-trial=2 --gpus-per-trial=0 fit no node: the largest node has 1 "
            "CPU(s), and the autoscaler may launch: none") in done.stdout


def test_an_unreachable_address_fails_in_seconds_before_anything_starts(tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path / "home"))
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    code = cli.main(["tune", "--address", address, "--storage-path", str(tmp_path / "r"),
                     "--image-size", "32", "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - start < 30
    assert f"cannot reach a Ray cluster at {address}" in err
    assert not ray.is_initialized()
