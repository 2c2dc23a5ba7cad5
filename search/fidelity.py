"""Proxy fidelity: does the synthetic-defect objective rank trials as real defects do?

Computed at the end of every search whose data has labelled defects: Spearman's rank correlation,
over the finished (ranked) trials, between each trial's best ``val/auroc`` (synthetic defects)
and its best ``val/real_auroc`` (held-out real defects). High: the synthetic objective can be
trusted on this data, also where labels are missing. Low: it cannot, and the user is told how
to rank by the real figure instead (``--objective real`` or ``blend``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.stats import spearmanr

MIN_TRIALS = 4  # below this a rank correlation says nothing
LOW = 0.7  # the unfaithful search measured 0.62, its faithful one 0.98


@dataclass(frozen=True)
class Fidelity:
    spearman: float  # NaN with fewer than MIN_TRIALS trials or no variation
    trials: int

    @property
    def low(self) -> bool:
        return math.isfinite(self.spearman) and self.spearman < LOW

    def describe(self, objective: str) -> str:
        if not math.isfinite(self.spearman):
            return (f"Proxy fidelity: not measured ({self.trials} finished trial(s) with both "
                    f"figures; it needs {MIN_TRIALS}).")
        text = (f"Proxy fidelity: Spearman {self.spearman:+.2f} between val/auroc (synthetic "
                f"defects) and val/real_auroc (held-out real defects) over {self.trials} trials.")
        if not self.low:
            return text + " The synthetic objective ranks trials as real defects do here."
        advice = {"real": "this search ranked by real defects (--objective real), as it should",
                  "blend": "this search ranked by both figures averaged (--objective blend); "
                           "--objective real ranks by real defects alone"}.get(
            objective, "rank by the real figure with --objective real (or blend, the two "
                       "averaged)")
        return (text + f"\nWARNING: low. On this data the synthetic-defect objective does not "
                f"rank models the way real defects do, so it cannot be trusted to pick the best "
                f"detector; {advice}.")


def proxy_fidelity(trials: list[Any]) -> Fidelity | None:
    """Over ``search.report.TrialSummary`` objects; ``None`` when no trial saw real defects."""
    pairs = [(t.best_synthetic, t.best_real) for t in trials
             if t.ranked and math.isfinite(t.best_synthetic) and math.isfinite(t.best_real)]
    if not any(math.isfinite(t.best_real) for t in trials):
        return None
    if len(pairs) < MIN_TRIALS or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return Fidelity(math.nan, len(pairs))
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return Fidelity(float(rho), len(pairs))
