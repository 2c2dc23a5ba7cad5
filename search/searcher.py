"""Ray Tune search algorithm over a ``SearchSpace``: Optuna's random or TPE sampler.

Why not ``ray.tune.search.optuna.OptunaSearch``: its define-by-run mode puts every internal
Optuna parameter name into the trial config (``loss.mix``, the filtered choice sets). This
searcher asks the same Optuna study for values but hands Ray only dotted config keys, so a
trial's config is exactly what ``VAEConfig.with_overrides`` takes and what MLflow logs.

Optuna learns from each trial's best finite objective value; a trial that ended non-finite or
errored is told as failed, so TPE never models NaN.
"""

from __future__ import annotations

import logging
import math
import pickle
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
    """Suggests configs drawn by ``space.define`` from an Optuna study (ask/tell)."""

    def __init__(self, space: SearchSpace, sampler: optuna.samplers.BaseSampler, *,
                 metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self._space = space
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = "maximize" if mode == "max" else "minimize"
        self._study = optuna.create_study(direction=direction, sampler=sampler)
        self._trials: dict[str, optuna.trial.Trial] = {}
        self._best: dict[str, float] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        # The space lives here; Ray's param_space holds only constants. Accept Tune's metric.
        return not metric or metric == self._metric

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
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
        trial = self._trials.pop(trial_id, None)
        if trial is None:
            return
        if result:
            self.on_trial_result(trial_id, result)
        value = self._best.pop(trial_id, None)
        nonfinite = bool(result and result.get(NONFINITE))
        if value is None or nonfinite or error:
            self._study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, value)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__.copy(), file)

    def restore(self, checkpoint_path: str) -> None:
        # Only Tune's own experiment directory is read here (Tuner.restore pickles too).
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))  # noqa: S301
