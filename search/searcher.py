"""Ray Tune search algorithm over a ``SearchSpace``: Optuna's random or TPE sampler.

Why not ``ray.tune.search.optuna.OptunaSearch``: its define-by-run mode puts every internal
Optuna parameter name into the trial config (``loss.mix``, the filtered choice sets). This
searcher asks the same Optuna study for values but hands Ray only dotted config keys, so a
trial's config is exactly what ``VAEConfig.with_overrides`` takes and what MLflow logs.

Optuna learns from each trial's best finite objective value; a trial that ended non-finite or
errored is told as failed, so TPE never models NaN.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from typing import Any

import optuna
from ray.tune.search import Searcher

from search.keys import NONFINITE
from search.settings import SEARCH_ALGORITHMS
from search.space import SearchSpace

log = logging.getLogger(__name__)

def make_sampler(search_alg: str, seed: int, num_samples: int) -> optuna.samplers.BaseSampler:
    """``random``: independent draws. ``optuna``: TPE (Bergstra et al. 2011), multivariate and
    grouped so that the conditional parameters (rank, filtered loss mixes) are modelled jointly."""
    if search_alg == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search_alg == "optuna":
        startup = max(2, min(10, num_samples // 3))  # random warm-up before TPE models anything
        with warnings.catch_warnings():  # multivariate/group are marked experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                              multivariate=True, group=True, constant_liar=True)
    raise ValueError(f"unknown search algorithm {search_alg!r}; choose one of "
                     f"{list(SEARCH_ALGORITHMS)}")


class SpaceSearcher(Searcher):
    """Suggests configs drawn by ``space.define`` from an Optuna study (ask/tell).

    Its saved state (Tune's ``searcher-state-*.pkl``, written through ``save``) is JSON, not a
    pickle: the sequence of asks and tells. ``restore`` replays it against a fresh study with
    the same seeded sampler, which draws exactly what it drew before, so the study, the
    sampler's random state and TPE's model come back without unpickling anything from the
    storage path and without reaching into Optuna's private state.
    """

    def __init__(self, space: SearchSpace, *, search_alg: str, seed: int, num_samples: int,
                 metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self._space = space
        self._sampler_args = {"search_alg": search_alg, "seed": seed, "num_samples": num_samples}
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._fresh_study()

    def _fresh_study(self) -> None:
        direction = "maximize" if self._mode == "max" else "minimize"
        self._study = optuna.create_study(direction=direction,
                                          sampler=make_sampler(**self._sampler_args))
        self._trials: dict[str, optuna.trial.Trial] = {}
        self._best: dict[str, float] = {}
        # ["ask", trial_id] / ["tell", trial_id, value or None (failed)], in call order.
        self._events: list[list[Any]] = []

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        # The space lives here; Ray's param_space holds only constants. Accept Tune's metric.
        return not metric or metric == self._metric

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        self._events.append(["ask", trial_id])
        trial = self._study.ask()
        self._trials[trial_id] = trial
        return self._space.define(trial)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self._metric)
        if isinstance(value, int | float) and math.isfinite(value):
            best = self._best.get(trial_id)
            better = best is None or (value > best if self._mode == "max" else value < best)
            if better:
                self._best[trial_id] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self._trials:
            return
        if result:
            self.on_trial_result(trial_id, result)
        value = self._best.pop(trial_id, None)
        nonfinite = bool(result and result.get(NONFINITE))
        self._tell(trial_id, None if value is None or nonfinite or error else value)

    def _tell(self, trial_id: str, value: float | None) -> None:
        self._events.append(["tell", trial_id, value])
        trial = self._trials.pop(trial_id)
        if value is None:
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, value)

    # -- state: JSON, replayed ------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        state = {"format": STATE_FORMAT, "sampler": self._sampler_args, "metric": self._metric,
                 "mode": self._mode, "events": self._events, "best": self._best}
        with open(checkpoint_path, "w") as file:  # Tune writes a temporary file, then renames
            json.dump(state, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = parse_state(file.read(), checkpoint_path)
        self._sampler_args = state["sampler"]
        self._metric, self._mode = state["metric"], state["mode"]
        self._fresh_study()
        for event in state["events"]:
            if event[0] == "ask":
                self.suggest(event[1])
            else:
                self._tell(event[1], event[2])
        self._best = dict(state["best"])


STATE_FORMAT = 1


STATE_FILE_PATTERN = Searcher.CKPT_FILE_TMPL.format("*")  # Tune names the file (".pkl")


def parse_state(data: bytes, path: str) -> dict[str, Any]:
    """A saved ``SpaceSearcher`` state (the bytes of ``path``), checked; a pickle (aitexvae
    before JSON state) is refused unread, as is anything else that is not this format."""
    try:
        state = json.loads(data.decode("utf-8"))
        events = state["events"]
        valid = (state["format"] == STATE_FORMAT and isinstance(state["best"], dict)
                 and all(_finite(value) for value in state["best"].values())
                 and isinstance(state["sampler"], dict)
                 and set(state["sampler"]) == {"search_alg", "seed", "num_samples"}
                 and isinstance(events, list) and _valid_events(events))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"searcher state {path} is not the JSON this version of aitexvae "
                         f"writes ({type(error).__name__}); a pickle from an older version is "
                         "never loaded: start a new search with --name") from None
    if not valid:
        raise ValueError(f"searcher state {path} is damaged (expected format {STATE_FORMAT} "
                         "with asks and tells); start a new search with --name")
    return state


def _valid_events(events: list) -> bool:
    """Asks of new trial ids and tells of asked ones, each with a finite value or None."""
    asked: set[str] = set()
    pending: set[str] = set()
    for event in events:
        if not isinstance(event, list) or len(event) < 2 or not isinstance(event[1], str):
            return False
        kind, trial_id = event[0], event[1]
        if kind == "ask" and len(event) == 2 and trial_id not in asked:
            asked.add(trial_id)
            pending.add(trial_id)
        elif kind == "tell" and len(event) == 3 and trial_id in pending and (
                event[2] is None or _finite(event[2])):
            pending.discard(trial_id)
        else:
            return False
    return True


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
