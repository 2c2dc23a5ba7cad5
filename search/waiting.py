"""Says how long a search has waited for its first trial to start.

Until a node fits a trial (the autoscaler launching one, or another job's trials finishing),
Tune only shows the trials PENDING; this says, every ``every_s``, how long that has lasted, so
a search waiting for a scale-up is not mistaken for a hung one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ray import tune

log = logging.getLogger(__name__)


class FirstTrialWait(tune.Callback):
    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.started_at: float | None = None
        self.said_at = 0.0
        self.done = False

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self.done:
            return
        now = self.clock()
        if self.started_at is None:
            self.started_at = self.said_at = now
        waited = now - self.started_at
        if any(trial.status == "RUNNING" for trial in trials):
            self.done = True
            if waited >= self.every_s:
                log.warning("the first trial started after %.0f s of waiting", waited)
            return
        if now - self.said_at >= self.every_s:
            self.said_at = now
            log.warning("no trial has started after %.0f s: Tune keeps them PENDING until a node "
                        "fits one (the autoscaler launching it, or other work finishing)", waited)

    def __getstate__(self) -> dict:  # pickled into tuner.pkl: a resumed search waits anew
        return {"every_s": self.every_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["every_s"])
