"""Ray's trial config and results → MLflow params and metrics with ``split/quantity`` keys."""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
SKIPPED_RESULT_KEYS = ("config",)  # Ray echoes the trial config inside every result


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"latent_dim": 8}}`` or ``{"model.latent_dim": 8}`` → ``{"model/latent_dim": "8"}``.

    Nested sections and dotted keys give the same ``/`` key, so MLflow groups params by section
    whichever form the launcher used.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{str(key).replace('.', '/')}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}/"))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def trial_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A trial's whole resolved config as params: the keys Ray passed (the search's base and
    searched keys) on top of every other ``VAEConfig`` key's default, so a child run shows the
    config that trained it — not only what was searched. Unknown keys are kept as given."""
    from vae.config import VAEConfig

    flat = {key.replace("/", "."): value for key, value in flatten_params(config).items()}
    known = {key: _value(flat[key]) for key in VAEConfig.valid_keys() if key in flat}
    try:
        resolved = VAEConfig().with_overrides(known).flat()
    except (ValueError, TypeError):  # not a config this code can build: log it as it came
        return flatten_params(config)
    extra = {key: value for key, value in flat.items() if key not in resolved}
    return flatten_params({**resolved, **{k: flat[k] for k in known}, **extra})


def metrics_from_result(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every numeric ``split/quantity`` value of a reported result (``train/loss``, ``val/auroc``).

    Ray's own bookkeeping (``time_total_s``, ``pid``, ``done``...) has no ``/`` and is left out;
    NaN and infinities are kept so the run shows where a trial went wrong.
    """
    metrics: dict[str, float] = {}
    for key, value in result.items():
        if not prefix and key in SKIPPED_RESULT_KEYS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            metrics.update(metrics_from_result(value, prefix=f"{name}/"))
        elif "/" in name and _is_number(value):
            metrics[name] = float(value)
    return metrics


def max_epochs_of(config: Mapping[str, Any]) -> int | None:
    """``train.num_epochs`` of a trial config (its default when the search does not set it)."""
    from vae.config import VAEConfig

    flat = {key.replace("/", "."): value for key, value in flatten_params(config).items()}
    known = {key: _value(flat[key]) for key in VAEConfig.valid_keys() if key in flat}
    try:
        return VAEConfig().with_overrides(known).train.num_epochs
    except (ValueError, TypeError):
        return None


def _value(text: str) -> Any:
    """A flattened param back to its Python value (``"8"`` → 8, ``"sigmoid"`` stays)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _is_number(value: object) -> bool:
    # numbers.Real covers Python and NumPy scalars; a bool is a flag, not a metric.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
