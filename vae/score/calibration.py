"""Calibration: statistics of scores on normal validation patches and an accept/reject threshold.

Unsupervised detection has no labelled defects to tune a threshold on, so the default threshold
is a high quantile of the scores of held-out *normal* patches: with ``quantile=0.99`` about 1 %
of normal patches are rejected (the false-alarm rate a user chooses). Saved beside the model as
``calibration.json``, so a pulled model makes the same decisions as its trial.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION_FILE = "calibration.json"
REPORTED_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """True (reject) where a score is above ``threshold`` or not finite; the one decision rule."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not math.isfinite(threshold):
        raise ValueError(f"threshold={threshold!r} is invalid; allowed: a finite number")
    scores = np.asarray(scores, dtype=np.float64)
    return ~(np.isfinite(scores) & (scores <= threshold))


@dataclass(frozen=True)
class Calibration:
    """Normal-score statistics; ``decide`` flags scores strictly above ``threshold``."""

    n: int
    mean: float
    std: float
    quantile: float  # the quantile of normal scores used as the threshold
    threshold: float
    quantiles: dict[str, float] = field(default_factory=dict)  # {"0.99": ...} for reference

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"calibration n={self.n!r} is invalid; allowed: an integer >= 1")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"calibration quantile={self.quantile!r} is out of range; "
                             "allowed (0, 1)")
        for name in ("mean", "std", "threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise ValueError(f"calibration {name}={value!r} is invalid; allowed: a finite "
                                 "number")

    @classmethod
    def fit(cls, normal_scores: np.ndarray, quantile: float = 0.99) -> Calibration:
        """Statistics of ``normal_scores`` (1-D, finite) and the ``quantile`` threshold."""
        scores = np.asarray(normal_scores, dtype=np.float64).reshape(-1)
        if scores.size == 0:
            raise ValueError("cannot calibrate on zero normal scores; need at least 1")
        if not np.isfinite(scores).all():
            raise ValueError(f"{int((~np.isfinite(scores)).sum())} normal score(s) are NaN or "
                             "infinite; calibrate on finite scores only")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile={quantile!r} is out of range; allowed (0, 1)")
        levels = sorted({*REPORTED_QUANTILES, quantile})
        values = np.quantile(scores, levels)
        return cls(n=int(scores.size), mean=float(scores.mean()), std=float(scores.std()),
                   quantile=float(quantile), threshold=float(np.quantile(scores, quantile)),
                   quantiles={f"{q:g}": float(v) for q, v in zip(levels, values, strict=True)})

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Bool array: True = anomalous (reject), for every score above the threshold.

        A NaN or infinite score is a reject too: the model could not tell, and a defect
        detector must never turn "cannot tell" into "good".
        """
        return decide(scores, self.threshold)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read calibration file {path}: {error}") from error
        expected = {"n", "mean", "std", "quantile", "threshold", "quantiles"}
        if not isinstance(data, dict) or not expected - {"quantiles"} <= set(data) \
                or set(data) - expected:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"calibration file {path} has keys {keys}; expected "
                             f"{sorted(expected)}")
        return cls(**data)
