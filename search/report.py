"""The end-of-search summary: rank trials by their best ``val/objective`` (``search.objective``),
pick the winner, say how well the synthetic objective agreed with real defects, say what to run
next.

Trials that reported a non-finite loss or metric are never ranked (``nonfinite`` in any report),
whatever they reported before; trials without a finite objective are listed but not ranked.
Works on anything shaped like Ray's ``ResultGrid`` (an iterable of ``Result``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.fidelity import Fidelity, proxy_fidelity
from search.importance import format_importances
from search.keys import NONFINITE
from vae import keys
from vae.score.scorers import NAMES


@dataclass(frozen=True)
class TrialSummary:
    trial_id: str
    status: str  # "ok", "nonfinite", "error", "no result"
    best_objective: float  # NaN when the trial never reported a finite val/objective
    best_epoch: int | None
    epochs: int  # highest epoch reported
    config: dict[str, Any]
    best_metrics: dict[str, Any] = field(default_factory=dict)
    # Each figure's best over the trial's epochs (for search.fidelity); NaN when never reported.
    best_synthetic: float = math.nan
    best_real: float = math.nan
    checkpoint_path: str | None = None  # the checkpoint of the best epoch
    path: str | None = None
    error: str | None = None

    @property
    def ranked(self) -> bool:
        # A trial that errored (after its retries) is listed, never ranked: see
        # tracking.finish.eligible, which applies the same rule to the champion.
        return self.status == "ok" and math.isfinite(self.best_objective) \
            and self.checkpoint_path is not None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def unfinished_trials(experiment_path: str, num_samples: int | None) -> int:
    """Trials neither TERMINATED nor ERROR in the experiment state Tune saved last (it saves it
    on Ctrl-C too, before stopping what runs), plus trials never started."""
    from ray import tune

    trials = tune.ExperimentAnalysis(experiment_path).trials
    open_trials = sum(t.status not in ("TERMINATED", "ERROR") for t in trials)
    return open_trials + max(0, (num_samples or 0) - len(trials))


def _best(rows: list[dict[str, Any]], key: str) -> float:
    return max((float(r[key]) for r in rows if _finite(r.get(key))), default=math.nan)


def summarize_result(result: Any) -> TrialSummary:
    """One Ray ``Result`` → its best epoch by ``val/objective`` and where its checkpoint is."""
    metrics = dict(result.metrics or {})
    frame = result.metrics_dataframe
    rows = frame.to_dict("records") if frame is not None and len(frame) else \
        ([metrics] if metrics else [])
    nonfinite = any(_finite(r.get(NONFINITE)) and r.get(NONFINITE) > 0 for r in rows)
    finite = [r for r in rows if _finite(r.get(keys.OBJECTIVE))]
    best = max(finite, key=lambda r: r[keys.OBJECTIVE]) if finite else {}
    epochs = [int(r[keys.EPOCH]) for r in rows if _finite(r.get(keys.EPOCH))]
    checkpoint = None
    if best and not nonfinite and result.best_checkpoints:
        checkpoint = result.get_best_checkpoint(keys.OBJECTIVE, keys.OBJECTIVE_MODE).path
    status = "nonfinite" if nonfinite else "error" if result.error else \
        "ok" if rows else "no result"
    config = {k: v for k, v in (metrics.get("config") or {}).items()}
    return TrialSummary(
        trial_id=str(metrics.get("trial_id", "?")), status=status,
        best_objective=float(best.get(keys.OBJECTIVE, math.nan)),
        best_epoch=int(best[keys.EPOCH]) if best.get(keys.EPOCH) is not None else None,
        epochs=max(epochs, default=0), config=config,
        best_metrics={k: v for k, v in best.items() if k.startswith(("train/", "val/"))},
        best_synthetic=_best(rows, keys.VAL_AUROC), best_real=_best(rows, keys.VAL_REAL_AUROC),
        checkpoint_path=checkpoint, path=result.path,
        error=str(result.error).splitlines()[0][:300] if result.error else None)


@dataclass(frozen=True)
class SearchSummary:
    trials: list[TrialSummary]  # ranked first (best first), then the rest

    @property
    def fidelity(self) -> Fidelity | None:
        return proxy_fidelity(self.trials)

    @property
    def winner(self) -> TrialSummary | None:
        return self.trials[0] if self.trials and self.trials[0].ranked else None

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)


def summarize(results: Iterable[Any]) -> SearchSummary:
    trials = [summarize_result(r) for r in results]
    ranked = sorted((t for t in trials if t.ranked), key=lambda t: -t.best_objective)
    rest = [t for t in trials if not t.ranked]
    return SearchSummary(ranked + rest)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_summary(summary: SearchSummary, searched_keys: Sequence[str], *, top: int = 5,
                   next_commands: Sequence[str] = (),
                   importances: Mapping[str, float] | None = None,
                   objective: str = "synthetic") -> str:
    """The text printed after Ray's trial table (``importances``: ``search.importance``)."""
    lines = [f"\nSearch finished: {len(summary.trials)} trials — "
             f"{summary.count('ok')} ok, {summary.count('nonfinite')} stopped non-finite, "
             f"{summary.count('error')} errored."]
    columns = [k for k in searched_keys if any(k in t.config for t in summary.trials)]
    figures = [keys.VAL_AUROC] + ([keys.VAL_REAL_AUROC] if any(
        keys.VAL_REAL_AUROC in t.best_metrics for t in summary.trials) else [])
    header = ["rank", "trial", keys.OBJECTIVE, *figures, "epoch"] + \
        [c.split(".", 1)[1] for c in columns]
    table = [header]
    for rank, trial in enumerate(summary.trials[:top], start=1):
        label = str(rank) if trial.ranked else trial.status
        table.append([label, trial.trial_id, _short(trial.best_objective)]
                     + [_short(trial.best_metrics.get(f, "-")) for f in figures]
                     + [f"{trial.best_epoch or '-'}/{trial.epochs}"]
                     + [_short(trial.config.get(c, "-")) for c in columns])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append(f"\nTop {min(top, len(summary.trials))} trials by best {keys.OBJECTIVE} "
                 f"({objective}):")
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
              for row in table]
    fidelity = summary.fidelity
    if fidelity is not None:
        lines += ["", fidelity.describe(objective)]
    lines += format_importances(importances or {}, sum(t.ranked for t in summary.trials))
    winner = summary.winner
    if winner is None:
        lines.append(f"\nNo trial produced a finite {keys.OBJECTIVE}; nothing to pick.")
        return "\n".join(lines)
    lines.append(f"\nWinner: trial {winner.trial_id}, {keys.OBJECTIVE} "
                 f"{winner.best_objective:.4f} ({objective}) at epoch {winner.best_epoch}")
    lines += [f"  {k} = {_short(v)}" for k, v in sorted(winner.config.items())]
    index = winner.best_metrics.get(keys.VAL_SCORER_INDEX)
    if isinstance(index, int | float) and 0 <= index < len(NAMES):
        compared = winner.best_metrics.get(keys.VAL_SCORERS_COMPARED, float("nan"))
        lines.append(f"  scorer: {NAMES[int(index)]} (the best of {compared:g} compared "
                     "on each validation pass; the pulled model scores with it)")
    lines.append("  metrics at that epoch: " + ", ".join(  # per-scorer figures: in MLflow
        f"{k} {_short(v)}" for k, v in sorted(winner.best_metrics.items())
        if "_by_scorer/" not in k))
    lines.append(f"  checkpoint: {winner.checkpoint_path}")
    lines.append("\nNext:")
    commands = list(next_commands) or [
        f"python -c \"import vae; model = vae.load('{winner.checkpoint_path}')\""]
    lines += [f"  {c}" for c in commands]
    return "\n".join(lines)
