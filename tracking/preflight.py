"""Reach the MLflow tracking store within seconds, before Ray starts any trial.

MLflow's HTTP client retries an unreachable server for minutes (7 retries with back-off, ~245 s
measured here) and SQLite fails only at the first write, so a search could train for a while
and then lose its tracking. ``check_tracking_uri`` fails fast with a message naming the URI, and
``bound_http_retries`` caps the client's retries for the rest of the driver's life.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from pathlib import Path

logger = logging.getLogger(__name__)

# Defaults for the driver's MLflow HTTP client; a user's own environment settings win.
HTTP_MAX_RETRIES = "2"
HTTP_TIMEOUT_S = "30"


class TrackingUnavailableError(RuntimeError):
    """The tracking store cannot be reached or written; the message names the URI and a fix."""


def bound_http_retries() -> None:
    """Cap MLflow's HTTP retries/timeout in this process unless the user set them already."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_MAX_RETRIES)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)


def sqlite_path(uri: str) -> Path:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix:
        raise ValueError(f"not a file SQLite URI: {uri!r}; expected sqlite:///PATH/TO/FILE.db")
    return Path(uri[len(prefix):].split("?", 1)[0])


def _fail(uri: str, reason: str) -> TrackingUnavailableError:
    return TrackingUnavailableError(
        f"MLflow tracking store {uri!r} is not usable: {reason}. Start the tracking server, "
        "pass another --tracking-uri (default sqlite:///mlflow.db), or run with --no-tracking.")


def _check_http(uri: str, timeout_s: float) -> None:
    # /health is unauthenticated and cheap: it tells "nothing listens" apart from "API refuses".
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError as error:
        raise _fail(uri, f"GET /health answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise _fail(uri, f"no answer to GET /health within {timeout_s:g}s ({reason})") from None
    # Then one real API call through MLflow's client, so credentials from the environment apply.
    _check_other(uri, timeout_s)


def _check_sqlite(uri: str, timeout_s: float) -> None:
    path = sqlite_path(uri)
    folder = path.parent.resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _fail(uri, f"cannot create folder {str(folder)!r} ({error.strerror})") from None
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise _fail(uri, f"{str(path)!r} is not writable")
    try:
        with closing(sqlite3.connect(path, timeout=timeout_s)) as connection:
            # Reading the schema fails on a file that is not a SQLite database.
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        raise _fail(uri, f"cannot open {str(path)!r} as a SQLite database ({error})") from None
    _migrate_once(uri, path)


def _migrate_once(uri: str, path: Path) -> None:
    """Create (or upgrade) MLflow's schema under an exclusive lock on ``<file>.lock``.

    MLflow creates its tables on first use without a lock, so two searches starting at once on
    a new file race and the loser dies with ``table experiment_tags already exists`` — after Ray
    started. Here the first process migrates and the others wait for it (MLflow's migration is
    ~12 s on 2 cores), then find the schema in place; every later use skips the wait.
    """
    from mlflow import MlflowClient  # imported here: the import itself takes a second or two

    lock_path = path.parent / f"{path.name}.lock"
    try:
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except OSError as error:
        raise _fail(uri, f"cannot lock {str(lock_path)!r} ({error.strerror})") from None
    except Exception as error:  # MLflow's own errors: a broken or foreign schema
        raise _fail(uri, f"{type(error).__name__}: {error}") from None


def _check_other(uri: str, timeout_s: float) -> None:
    """Any other store MLflow supports: one bounded API call, run in a daemon thread."""
    from mlflow import MlflowClient  # imported here: the import itself takes a second or two

    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            outcome.append(None)
        except BaseException as error:  # reported to the caller below
            outcome.append(error)

    thread = threading.Thread(target=probe, name="mlflow-preflight", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise _fail(uri, f"no answer within {timeout_s:g}s")
    if outcome[0] is not None:
        raise _fail(uri, f"{type(outcome[0]).__name__}: {outcome[0]}")


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Raise ``TrackingUnavailableError`` unless ``uri`` answers (or opens) within ``timeout_s``."""
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"tracking URI must be a non-empty string, got {uri!r}")
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    bound_http_retries()
    if scheme in ("http", "https"):
        _check_http(uri, timeout_s)
    elif scheme == "sqlite":
        if uri.startswith("sqlite:///:memory:") or uri == "sqlite://":
            raise _fail(uri, "an in-memory SQLite store loses every run when the driver exits")
        _check_sqlite(uri, timeout_s)
    elif scheme in ("", "file"):
        raise _fail(uri, "the file store is deprecated in MLflow 3 and has no Model Registry; "
                         "use sqlite:///PATH.db")
    else:
        _check_other(uri, timeout_s)
    logger.debug("tracking store %s is reachable", uri)
