"""One background thread that performs every MLflow write of a search, in submission order.

Ray Tune calls callbacks on its driver loop, and a function trainable waits in ``tune.report``
until the driver has processed its result, so a slow store (a remote server, SQLite fsyncs,
an artifact upload, rendering a picture) would stall every trial. The tracker decides what to
write synchronously (cheap, in memory) and hands the I/O to this thread. A failed write is
logged and counted, never raised into Tune: losing a metric must not kill a search.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)


class Writer:
    def __init__(self, asynchronous: bool = True) -> None:
        self._executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-writer")
                          if asynchronous else None)
        self._failures: list[str] = []

    @property
    def failures(self) -> list[str]:
        """Every tracking step of the search that failed, in order (``what: Error: message``)."""
        return list(self._failures)

    def report(self, what: str, error: Exception) -> None:
        """Log and record one failed tracking step: the one place failures are counted."""
        logger.warning("MLflow tracking: %s failed: %s: %s", what, type(error).__name__, error,
                       exc_info=logger.isEnabledFor(logging.DEBUG))
        self._failures.append(f"{what}: {type(error).__name__}: {error}")

    def attempt(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` now, on this thread; a failure is reported and gives None."""
        try:
            return function(*args)
        except Exception as error:  # reported, counted, and shown at the end of the search
            self.report(what, error)
            return None

    def submit(self, what: str, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` after every earlier submission; ``what`` names it in errors."""
        if self._executor is None:
            self._run(what, function, args)
        else:
            self._executor.submit(self._run, what, function, args)

    def _run(self, what: str, function: Callable[..., Any], args: tuple) -> None:
        self.attempt(what, function, *args)  # one entry point for timing it (bench/)

    def flush(self) -> None:
        """Wait until everything submitted so far has been written (or has failed)."""
        if self._executor is not None:
            done: Future = self._executor.submit(lambda: None)
            done.result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
