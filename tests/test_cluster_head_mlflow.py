"""The head node's MLflow commands from ``cluster.yaml``, run for real on this machine.

The shell in ``head_start_ray_commands`` (start in its own session, pid file, health wait,
restart on a second ``ray up``) is executed as written, with only what a laptop cannot have
swapped: ``$HOME`` (a temp dir with ``venv/bin/mlflow``), the S3 bucket (a local folder) and the
port (a free one, in case 5000 is taken here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.mlflow_server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_head_commands_start_mlflow_on_loopback_and_restart_cleanly(tmp_path):
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    commands = [c for c in config["head_start_ray_commands"] if "ray st" not in c]
    assert len(commands) == 3 and "mlflow" in commands[1]  # stop old, start, wait for health
    home = tmp_path / "home"
    (home / "venv" / "bin").mkdir(parents=True)
    (home / "venv" / "bin" / "mlflow").symlink_to(Path(sys.executable).with_name("mlflow"))
    port = free_port()
    artifacts = tmp_path / "bucket" / "mlflow-artifacts"
    local = [c.replace("s3://REPLACE-ME-bucket/mlflow-artifacts", str(artifacts))
              .replace("5000", str(port)) for c in commands]
    env = {**os.environ, "HOME": str(home)}
    pid_file = home / "mlflow" / "server.pid"
    started = []
    try:
        for _ in range(2):  # a second `ray up` reruns the start commands
            for command in local:
                done = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                                      text=True, timeout=150)
                assert done.returncode == 0, f"{command!r}:\n{done.stderr[-3000:]}"
            started.append(int(pid_file.read_text()))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                assert reply.status == 200
            # Only on loopback (0100007F is 127.0.0.1 in /proc/net/tcp), never 0.0.0.0.
            assert _listening_addresses(port) == {"0100007F"}
        first, second = started
        assert first != second
        assert not _alive(first), "the restart left the previous server's process group alive"
        assert _alive(second)
        assert (home / "mlflow" / "mlflow.db").is_file()
    finally:
        for pid in started:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
