"""The tracking store is reached (or refused) within seconds, before Ray starts any trial."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.mlflow_server import free_port
from tracking.preflight import TrackingUnavailableError, check_tracking_uri


def test_an_unreachable_server_fails_within_seconds_naming_the_uri():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(TrackingUnavailableError) as caught:
        check_tracking_uri(uri, timeout_s=3)
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert repr(uri) in message and "--no-tracking" in message and "/health" in message


def test_a_sqlite_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TrackingUnavailableError, match="cannot open .* as a SQLite database"):
        check_tracking_uri(f"sqlite:///{path}")


def test_a_sqlite_store_in_a_new_folder_is_created(tmp_path):
    path = tmp_path / "new" / "folder" / "mlflow.db"
    check_tracking_uri(f"sqlite:///{path}")
    assert path.parent.is_dir()


def test_a_sqlite_folder_that_cannot_be_created_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(TrackingUnavailableError, match="cannot create folder"):
        check_tracking_uri(f"sqlite:///{blocker}/sub/mlflow.db")


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "mlruns", "sqlite:///:memory:"])
def test_stores_that_lose_runs_or_have_no_registry_are_refused(uri):
    with pytest.raises(TrackingUnavailableError):
        check_tracking_uri(uri)


def test_the_client_retries_are_bounded_after_a_check(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # a user's own setting wins
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


@pytest.mark.slow
def test_aitexvae_tune_with_an_unreachable_store_fails_before_any_trial(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    storage = tmp_path / "ray_results"
    env = {**os.environ, "AITEXVAE_HOME": str(tmp_path / "home"),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    start = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).with_name("aitexvae")), "tune", "--name", "unreachable",
         "--image-size", "32", "--num-samples", "2", "--max-epochs", "1", "--train-patches",
         "64", "--storage-path", str(storage), "--tracking-uri", uri],
        env=env, capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - start
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("aitexvae tune: error: tracking: MLflow tracking store")
    assert repr(uri) in last and "Traceback" not in done.stderr
    assert not list(storage.glob("**/trial_*"))  # no trial ever started
    assert elapsed < 90, elapsed  # data + a local Ray start dominate; the check itself is <5 s


def test_two_searches_starting_at_once_on_a_new_sqlite_store_both_get_it(tmp_path):
    """Real processes racing MLflow's first-use migration (issue 11 item 3)."""
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code = ("import sys; from tracking.preflight import check_tracking_uri; "
            "check_tracking_uri(sys.argv[1], timeout_s=120); "
            "from mlflow import MlflowClient; c = MlflowClient(sys.argv[1]); "
            "print(c.create_experiment(sys.argv[2]))")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    racers = [subprocess.Popen([sys.executable, "-c", code, uri, f"search-{i}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(2)]
    results = [racer.communicate(timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], [err[-600:] for _, err in results]
    from mlflow import MlflowClient

    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {"search-0", "search-1"} <= names
