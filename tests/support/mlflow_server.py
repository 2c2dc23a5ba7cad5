"""A real ``mlflow server`` process on 127.0.0.1 for tests: SQLite backend, local artifact folder.

The server spawns a uvicorn child (and, unless disabled, job-runner children), so it is started
in its own session and stopped by signalling the whole process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MlflowServer:
    uri: str  # http://127.0.0.1:PORT
    backend_store_uri: str
    artifacts_dir: Path
    log_path: Path
    pid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    # uvicorn workers may outlive the leader for a moment; make sure the group is gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def migrated_sqlite(path: Path, template_dir: Path | None = None) -> str:
    """A SQLite MLflow store at ``path`` with its schema in place; returns its URI.

    MLflow's schema migrations take ~12 s on this machine, so they run once into
    ``template_dir/mlflow-template.db`` (e.g. pytest's session base temp) and each store is a
    copy of that file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if template_dir is not None:
        template = template_dir / "mlflow-template.db"
        if not template.exists():
            migrated_sqlite(template)
        shutil.copyfile(template, path)
        return f"sqlite:///{path.resolve()}"
    # A fresh interpreter: the migration is the same code path a user's first search runs.
    code = ("import sys; from mlflow import MlflowClient; "
            "MlflowClient(tracking_uri=sys.argv[1]).search_experiments()")
    uri = f"sqlite:///{path.resolve()}"
    subprocess.run([sys.executable, "-c", code, uri], check=True, capture_output=True,
                   env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, timeout=300)
    return uri


@contextmanager
def mlflow_server(workdir: Path, startup_timeout_s: float = 90.0,
                  template_dir: Path | None = None) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` with ``workdir/mlflow.db`` and ``workdir/artifacts``; yield it.

    With ``template_dir`` the database starts as a copy of a migrated template (see
    ``migrated_sqlite``): the server is up in ~5 s instead of ~10 s.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if template_dir is not None:
        migrated_sqlite(workdir / "mlflow.db", template_dir)
    db_uri = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    artifacts = (workdir / "artifacts").resolve()
    log_path = workdir / "server.log"
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", db_uri, "--artifacts-destination", str(artifacts),
               "--workers", "1"]
    # The job runner spawns ~8 consumer processes that no test needs on a 2-core machine.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _healthy(uri):
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}; log:\n"
                                   f"{log_path.read_text(errors='replace')[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server at {uri} not healthy after "
                                   f"{startup_timeout_s}s; log:\n"
                                   f"{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.3)
        yield MlflowServer(uri=uri, backend_store_uri=db_uri, artifacts_dir=artifacts,
                           log_path=log_path, pid=process.pid)
    finally:
        _stop_group(process)
