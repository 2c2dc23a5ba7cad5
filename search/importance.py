"""Which knobs mattered: hyperparameter importances over a search's finished trials.

Optuna's fANOVA evaluator (Hutter, Hoos & Leyton-Brown 2014, "An Efficient Approach for
Assessing Hyperparameter Importance": the variance of the objective, under a random forest
fitted to the trials, that each parameter explains on its own), normalised so the main effects
sum to 1 over the parameters every ranked trial has: relative importances, not shares of the
total variance (interactions are left out; ``model.rank``, drawn only for low-rank covariances,
drops out; the loss mix counts as one parameter). fANOVA needs no particular sampler or quantile
of good trials, so it also works for a search of a dozen random trials, where PED-ANOVA's
top-quantile split would hold one or two.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from search.space import DEFAULT_LOSS_MIXES, LOSS_WEIGHT_KEYS

log = logging.getLogger(__name__)

MIN_TRIALS = 4  # below this a forest over the trials says nothing
LOSS_MIX = "loss.mix"


def _loss_mix(config: Mapping[str, Any]) -> str:
    weights = tuple(float(config.get(key, 0.0)) for key in LOSS_WEIGHT_KEYS)
    for mix in DEFAULT_LOSS_MIXES:
        if (mix.mse_weight, mix.bce_weight, mix.fft_weight) == weights:
            return mix.name
    return " ".join(f"{key.split('.')[1].removesuffix('_weight')}={value:g}"
                    for key, value in zip(LOSS_WEIGHT_KEYS, weights, strict=True))


def _trial_params(config: Mapping[str, Any], searched: Sequence[str]) -> dict[str, Any]:
    params = {key: config[key] for key in searched
              if key in config and key not in LOSS_WEIGHT_KEYS}
    if any(key in searched for key in LOSS_WEIGHT_KEYS):
        params[LOSS_MIX] = _loss_mix(config)
    return params


def _distribution(values: list[Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) \
            and len(set(values)) > 2:
        low, high = float(min(values)), float(max(values))
        return FloatDistribution(low, high)  # > 2 distinct values: low < high
    return CategoricalDistribution(sorted(set(values), key=repr))


def param_importances(trials: Sequence[tuple[Mapping[str, Any], float]],
                      searched: Sequence[str], *, seed: int = 0) -> dict[str, float]:
    """``{key: importance}``, most important first, from ``(config, objective)`` pairs.

    Only trials with a finite objective count; keys that did not vary are left out. Returns
    ``{}`` when fewer than ``MIN_TRIALS`` trials or no varying key remain.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    finished = [(_trial_params(config, searched), value) for config, value in trials
                if isinstance(value, int | float) and math.isfinite(value)]
    if len(finished) < MIN_TRIALS:
        return {}
    common = set.intersection(*(set(params) for params, _ in finished))
    varying = sorted(k for k in common if len({repr(p[k]) for p, _ in finished}) > 1)
    if not varying:
        return {}
    distributions = {k: _distribution([p[k] for p, _ in finished]) for k in varying}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials([optuna.trial.create_trial(
        params={k: params[k] for k in varying}, distributions=distributions, value=value)
        for params, value in finished])
    importances = optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=seed), normalize=True)
    return {key: float(value) for key, value in importances.items()}


def search_importances(summary: Any, searched: Sequence[str]) -> dict[str, float]:
    """Importances over a ``search.report.SearchSummary``'s ranked trials (best objective)."""
    pairs = [(t.config, t.best_objective) for t in summary.trials if t.ranked]
    try:
        return param_importances(pairs, searched)
    except Exception as error:  # a summary nicety: never fail the end of a search over it
        log.warning("hyperparameter importances could not be computed: %s: %s",
                    type(error).__name__, error)
        return {}


def format_importances(importances: Mapping[str, float], n_trials: int, width: int = 30
                       ) -> list[str]:
    """Lines for the end-of-search summary: one bar per parameter."""
    if not importances:
        return []
    name_width = max(len(k) for k in importances)
    lines = [f"\nWhich knobs mattered (fANOVA over {n_trials} ranked trials; relative "
             "importance for the objective, summing to 1):"]
    lines += [f"  {key.ljust(name_width)}  {value:5.3f}  {'#' * round(value * width)}"
              for key, value in importances.items()]
    return lines
