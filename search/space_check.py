"""Prove before launch that a search space only produces valid configs; sample it without Ray.

``check_space`` walks every path through ``SearchSpace.define`` over the *support points* of
the coupled keys (every choice; both ends of a numeric range) and builds a ``VAEConfig`` for
each, so a space that can produce an invalid combination (BCE with tanh, rank >= latent_dim,
all reconstruction weights 0) fails with a message naming that combination — deterministically,
not by luck of a random draw. Keys with no cross-key constraint are checked value by value.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from search.space import COUPLED_KEYS, Fixed, SearchSpace, SpaceError
from vae.config import ConfigError, VAEConfig

MAX_PATHS = 200_000  # a space this large is almost surely a typo; fail instead of hanging


class RandomTrial:
    """Define-by-run trial drawing from a NumPy generator (fast, no Optuna study)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return list(choices)[int(self.rng.integers(len(choices)))]

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        if log:
            return float(np.exp(self.rng.uniform(np.log(low), np.log(high))))
        return float(self.rng.uniform(low, high))

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        if log:
            value = int(round(np.exp(self.rng.uniform(np.log(low), np.log(high + 1) - 1e-9))))
            return min(max(value, low), high)
        return int(self.rng.integers(low, high + 1))


class _PathTrial:
    """Replays a prefix of branch indices over support points; records the branching after."""

    def __init__(self, prefix: list[int], branches: Callable[[str], bool]) -> None:
        self.prefix, self.branches = prefix, branches
        self.path: list[int] = []
        self.widths: list[int] = []

    def _pick(self, name: str, options: list[Any]) -> Any:
        if not self.branches(name):
            return options[0]
        i = len(self.path)
        index = self.prefix[i] if i < len(self.prefix) else 0
        self.path.append(index)
        self.widths.append(len(options))
        return options[index]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._pick(name, list(choices))

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        return self._pick(name, [low, high] if low != high else [low])

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        return self._pick(name, [low, high] if low != high else [low])


def enumerate_paths(define: Callable[[Any], dict[str, Any]], branches: Callable[[str], bool],
                    limit: int = MAX_PATHS) -> Iterator[dict[str, Any]]:
    """Every result of ``define`` over the support points of the names ``branches`` accepts
    (depth-first, like an odometer whose wheels may depend on the wheels before them)."""
    prefix: list[int] = []
    for _ in range(limit):
        trial = _PathTrial(prefix, branches)
        yield define(trial)
        position = len(trial.path) - 1
        while position >= 0 and trial.path[position] + 1 >= trial.widths[position]:
            position -= 1
        if position < 0:
            return
        prefix = trial.path[:position] + [trial.path[position] + 1]
    raise SpaceError(f"the search space has more than {limit} combinations of "
                     f"{sorted(COUPLED_KEYS)} to check; narrow the choices")


def _base_key(name: str) -> str:
    return name.split(" ", 1)[0]  # "loss.mix (no bce)" → "loss.mix"


def _build(base: Mapping[str, Any], values: Mapping[str, Any]) -> VAEConfig:
    return VAEConfig().with_overrides({**base, **values})


SCORER_KEYS = ("score.map", "score.smooth_sigma", "score.reduction", "score.normalize",
               "score.reference")


def _check_scorer_keys(space: SearchSpace) -> None:
    """With ``score.select`` able to be "best", searching a scorer key would spend trials on a
    choice every validation pass overrides (vae.score.scorers compares the set itself)."""
    select = space.params.get("score.select")
    can_be_best = select is not None and any(v != "fixed" for v in _support(select))
    searched = [k for k in SCORER_KEYS if k in space.params
                and not isinstance(space.params[k], Fixed)]
    if can_be_best and searched:
        raise SpaceError(f"{searched} are searched while score.select can be 'best' or "
                         "'best_per_patch', which compare the built-in scorers on every "
                         "validation pass and override them; fix score.select: fixed in the "
                         "space file to search them")


def check_space(space: SearchSpace, base: Mapping[str, Any] | None = None) -> int:
    """Raise ``SpaceError`` if any config the space can draw is invalid; return paths checked.

    ``base`` holds the settings every trial shares (image size, epochs, seed).
    """
    base = dict(base or {})
    _check_scorer_keys(space)
    try:
        _build(base, {})
    except ConfigError as error:
        raise SpaceError(f"the fixed settings are invalid: {error}") from None
    coupled = lambda name: _base_key(name) in COUPLED_KEYS or name.startswith("loss.mix")  # noqa: E731
    count = 0
    for values in enumerate_paths(space.define, coupled):
        count += 1
        joint = {k: v for k, v in values.items() if k in COUPLED_KEYS}
        try:
            _build(base, joint)
        except ConfigError as error:
            combo = ", ".join(f"{k}={v!r}" for k, v in sorted(joint.items()))
            raise SpaceError(f"the search space can produce an invalid combination "
                             f"({combo}): {error}") from None
    # Keys without cross-key constraints: every support point on its own, on a valid base.
    anchor = {k: v for k, v in next(enumerate_paths(space.define, lambda _: False)).items()
              if k in COUPLED_KEYS}
    for key, dist in space.params.items():
        if key in COUPLED_KEYS:
            continue
        for value in _support(dist):
            try:
                _build(base, {**anchor, key: value})
            except ConfigError as error:
                raise SpaceError(f"search space key {key!r} ({dist.describe()}) can take the "
                                 f"invalid value {value!r}: {error}") from None
    return count


def _support(dist: Any) -> list[Any]:
    values: list[Any] = []
    for name in ("value", "values", "low", "high"):
        if hasattr(dist, name):
            item = getattr(dist, name)
            values.extend(item if name == "values" else [item])
    return values


def sample_configs(space: SearchSpace, count: int, seed: int = 0,
                   base: Mapping[str, Any] | None = None) -> list[VAEConfig]:
    """``count`` configs drawn at random from ``space`` (seeded), merged onto ``base``."""
    rng = np.random.default_rng(seed)
    return [_build(base or {}, space.define(RandomTrial(rng)))
            for _ in itertools.repeat(None, count)]
