"""The multi-node test cluster itself: real `ray start` processes with token authentication.

Checks what the multi-node search test relies on: two nodes join, drivers with the token
connect, drivers without it (or with a wrong one) are refused, a node can be removed, and
teardown leaves none of the cluster's processes behind while touching nobody else's.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.ray_cluster import MARKER_VAR, LocalRayCluster

pytestmark = pytest.mark.slow

# Ray retries a refused connection ~20 times, 1 s apart; 2 tries show the refusal as well.
FAST_REFUSAL = {"RAY_gcs_server_port_wait_time_s": "2"}
CONNECT = "import ray\nray.init(address={address!r})\nprint('CONNECTED')\n"


def _marked_pids(cluster_id: str) -> list[int]:
    needle = f"{MARKER_VAR}={cluster_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _start_driver(code: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_two_nodes_token_auth_node_removal_and_scoped_teardown(tmp_path):
    # A bystander process that is not part of the cluster must survive its teardown.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
    try:
        with LocalRayCluster(num_nodes=2, num_cpus=1) as cluster:
            state = cluster.cluster_state()
            assert state["alive_nodes"] == 2, state
            assert state["cpus"] == 2.0, state
            assert len(set(state["node_ids"])) == 2

            # Refused drivers run while the node removal below is detected (both take seconds).
            no_token_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
            no_token_env.update(FAST_REFUSAL, HOME=str(tmp_path))  # no ~/.ray/auth_token either
            wrong_token = tmp_path / "wrong_token"
            wrong_token.write_text(secrets.token_hex(32))
            wrong_token_env = {**cluster.driver_env(), **FAST_REFUSAL,
                               "RAY_AUTH_TOKEN_PATH": str(wrong_token)}
            code = CONNECT.format(address=cluster.address)
            refused = {"no token": _start_driver(code, no_token_env),
                       "wrong token": _start_driver(code, wrong_token_env)}

            worker = cluster.nodes[1]
            cluster.remove_node(worker)
            assert not worker.alive
            state = cluster.wait_for_nodes(1, timeout=60)
            assert state["alive_nodes"] == 1 and state["cpus"] == 1.0, state

            for what, driver in refused.items():
                out, err = driver.communicate(timeout=60)
                assert driver.returncode != 0, f"driver with {what} connected: {out}"
                assert "CONNECTED" not in out
                assert "AuthenticationError" in err and "InvalidAuthToken" in err, \
                    f"driver with {what} failed for another reason:\n{err[-2000:]}"

            # The remaining head still serves drivers that hold the token.
            done = cluster.run_driver(code)
            assert done.returncode == 0 and "CONNECTED" in done.stdout, done.stderr[-2000:]
            cluster_id, root = cluster.cluster_id, cluster.root
            assert _marked_pids(cluster_id), "the marker should be on the cluster's processes"

        deadline = time.monotonic() + 10
        while _marked_pids(cluster_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _marked_pids(cluster_id) == []
        assert not root.exists()
        assert bystander.poll() is None, "teardown killed a process outside the cluster"
    finally:
        bystander.kill()
        bystander.wait()
