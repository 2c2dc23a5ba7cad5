"""The ends of things: closing a trial's run (probe picture, status) and closing a search
(trials table, summary plot, champion registration, parent status).

Both run on the tracker's writer thread or after it has been flushed; they read what MLflow
stores, so a resumed search's summary covers the trials from before the restart too.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import vae
from tracking import settings as names
from tracking.artifacts import no_progress_bars
from tracking.probe import render_probe
from tracking.registry import RegisteredChampion, register_champion
from tracking.summary import FIXED_COLUMNS, plot_summary, searched_keys, write_table
from vae.io import CONFIG_FILE

if TYPE_CHECKING:
    from tracking.restore import TrialState
    from tracking.runs import SearchTracker

logger = logging.getLogger(__name__)


@dataclass
class SearchOutcome:
    parent_run_id: str
    status: str
    trials: int
    champion: RegisteredChampion | None = None
    champion_trial_id: str | None = None
    champion_objective: float | None = None
    failures: list[str] = field(default_factory=list)  # MLflow writes that failed (logged)


def warm_up() -> None:
    """One-time costs of the end of a search, paid on the writer thread while trials train
    rather than in the serial tail after the last one: matplotlib's import, and MLflow's map of
    installed packages (~0.8 s; built when a model is logged, to check its requirements)."""
    import matplotlib.figure  # noqa: F401

    try:
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map
    except ImportError:  # a private helper: without it, model logging just pays the cost later
        return
    _init_packages_to_modules_map()


def best_checkpoint_dir(tracker: SearchTracker, run_id: str, staged: Path | None) -> Path | None:
    """The trial's best checkpoint: this driver's staged copy, else downloaded from MLflow."""
    if staged is not None and staged.is_dir():
        return staged
    listed = tracker.client.list_artifacts(run_id, names.BEST_CHECKPOINT_PATH)
    if not listed:
        return None
    destination = Path(tempfile.mkdtemp(prefix="best-", dir=tracker._staging))
    with no_progress_bars():
        local = tracker.client.download_artifacts(run_id, names.BEST_CHECKPOINT_PATH,
                                                  str(destination))
    return Path(local)


def close_trial(tracker: SearchTracker, state: TrialState, status: str, reason: str | None
                ) -> None:
    if state.run_id is None:
        return
    if tracker.probe is not None:
        try:
            folder = best_checkpoint_dir(tracker, state.run_id, state.staged)
            if folder is not None:
                title = (f"{state.trial_id}  best epoch {state.best_epoch}  {tracker.objective}="
                         f"{tracker._sign * state.best:.4f}")
                path = tracker._staging / state.trial_id / "probe.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                render_probe(vae.load(folder), tracker.probe, title=title).save(path)
                tracker.client.log_artifact(state.run_id, str(path), names.PROBE_PATH)
        except Exception as error:  # a missing picture must not leave the run RUNNING
            tracker.writer.failures.append(f"probe picture of trial {state.trial_id}: {error}")
            logger.warning("MLflow: no probe picture for trial %s: %s", state.trial_id, error)
    if reason is not None:
        tracker.client.set_tag(state.run_id, names.TAG_STOP_REASON, reason)
    outcome = reason or f"completed all {state.last_epoch} epochs"
    tracker.client.set_tag(state.run_id, names.TAG_OUTCOME, outcome)
    best = "" if state.best_epoch is None else (
        f" Best `{tracker.objective}` = {tracker._sign * state.best:.4f} at epoch "
        f"{state.best_epoch}.")
    tracker.client.set_tag(state.run_id, names.TAG_NOTE,
                           f"Trial `{state.trial_id}`: {status}, {outcome}.{best}")
    tracker.client.set_terminated(state.run_id, status=status)


def _row(run) -> dict[str, object]:
    tags = run.data.tags
    return {"trial_id": tags.get(names.TAG_TRIAL_ID, ""), "run_id": run.info.run_id,
            "status": run.info.status, "stop_reason": tags.get(names.TAG_STOP_REASON, ""),
            "best_objective": tags.get(names.TAG_BEST_OBJECTIVE, ""),
            "best_epoch": tags.get(names.TAG_BEST_EPOCH, ""),
            "last_epoch": tags.get(names.TAG_LAST_EPOCH, ""), "nonfinite":
            tags.get(names.TAG_NONFINITE, ""), **run.data.params}


def eligible(row: dict[str, object]) -> bool:
    """A champion has a finite objective, never went non-finite and did not fail (the search's
    own ranking rule): a trial that errored — a full disk, a crash after its retries — may
    hold a checkpoint that looks valid, but nothing says it is what the trial would have kept."""
    try:
        value = float(row["best_objective"])  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return not row["nonfinite"] and row.get("status") != "FAILED" and math.isfinite(value)


def _description(tracker: SearchTracker, row: dict[str, object], folder: Path) -> str:
    run_id = str(row["run_id"])
    step = int(row["best_epoch"])  # type: ignore[arg-type]
    metrics = {}
    for key in sorted(tracker.client.get_run(run_id).data.metrics):
        values = [m.value for m in tracker.client.get_metric_history(run_id, key) if m.step == step]
        if values:
            metrics[key] = values[0]
    config = json.loads((folder / CONFIG_FILE).read_text()).get("config", {})
    lines = [f"Champion of search `{tracker.search_name}`: trial `{row['trial_id']}` "
             f"(run `{run_id}`), best {tracker.objective} = {float(row['best_objective']):.4f} at "
             f"epoch {step}.", "", "Metrics at that epoch:", ""]
    lines += [f"- `{key}`: {value:.6g}" for key, value in metrics.items()]
    lines += ["", "Config:", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```"]
    return "\n".join(lines)


def _register_best(tracker: SearchTracker, candidates: list[dict[str, object]],
                   outcome: SearchOutcome) -> None:
    for row in candidates:  # best first; one without a checkpoint artifact cannot be pulled
        state = tracker.trials.get(str(row["trial_id"]))
        weights = best_checkpoint_dir(tracker, str(row["run_id"]), state.staged if state else None)
        if weights is None:
            logger.warning("MLflow: trial %s has no best checkpoint artifact; trying the next",
                           row["trial_id"])
            continue
        settings = tracker.settings
        outcome.champion = register_champion(
            tracker.client, settings.tracking_uri, str(row["run_id"]), weights,
            settings.model_name, settings.alias, _description(tracker, row, weights),
            tags={"search": tracker.search_name, "trial_id": str(row["trial_id"]),
                  tracker.objective: str(row["best_objective"])})
        outcome.champion_trial_id = str(row["trial_id"])
        outcome.champion_objective = float(row["best_objective"])  # type: ignore[arg-type]
        tracker.client.log_metric(tracker.parent_run_id, names.best_metric(tracker.objective),
                                  outcome.champion_objective)
        tracker.client.set_tag(tracker.parent_run_id, names.TAG_CHAMPION,
                               outcome.champion.version_uri)
        return
    logger.warning("MLflow: no trial of search %r has a finite %s and a checkpoint; nothing "
                   "registered", tracker.search_name, tracker.objective)


def _summarise(tracker: SearchTracker, rows: list[dict[str, object]]) -> None:
    param_keys = sorted({key for row in rows for key in row} - set(FIXED_COLUMNS))
    folder = tracker._staging / "summary"
    write_table(rows, param_keys, folder)
    plot_summary(rows, searched_keys(rows, param_keys), tracker.objective,
                 folder / "search_summary.png")
    tracker.client.log_artifacts(tracker.parent_run_id, str(folder), names.SUMMARY_PATH)


def finish_search(tracker: SearchTracker, status: str, register: bool,
                  reason: str | None = None) -> SearchOutcome:
    rows = [_row(run) for run in tracker.children()]
    outcome = SearchOutcome(parent_run_id=tracker.parent_run_id, status=status, trials=len(rows))
    candidates = sorted((row for row in rows if eligible(row)),
                        key=lambda row: -tracker._sign * float(row["best_objective"]))
    steps = [("summary of the search", _summarise, (tracker, rows))]
    if register:
        steps.append(("registration of the champion", _register_best,
                      (tracker, candidates, outcome)))
    for what, step, args in steps:  # one failing step must not leave the parent RUNNING
        try:
            step(*args)
        except Exception as error:  # reported with the search's other tracking failures
            logger.warning("MLflow: %s failed: %s: %s", what, type(error).__name__, error)
            tracker.writer.failures.append(f"{what}: {type(error).__name__}: {error}")
    parent = tracker.parent_run_id
    if status != "FINISHED":  # say why in the UI, and how to go on
        what = reason or ("interrupted before every trial finished" if status == "KILLED"
                          else "failed")
        tracker.client.set_tag(parent, names.TAG_STOP_REASON, (
            f"search ended {status}: {what}; no champion was registered. `aitexvae tune "
            f"--resume {tracker.search_name}` (with the same --storage-path) continues it"))
    elif names.TAG_STOP_REASON in tracker.client.get_run(parent).data.tags:  # resumed, done
        tracker.client.delete_tag(parent, names.TAG_STOP_REASON)
    tracker.client.set_tag(parent, names.TAG_NOTE, _search_note(tracker, rows, status, outcome))
    tracker.client.set_terminated(parent, status=status)
    return outcome


def _search_note(tracker: SearchTracker, rows: list[dict[str, object]], status: str,
                 outcome: SearchOutcome) -> str:
    """The parent's description in the MLflow UI: what ran, and what won."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["status"])] = counts.get(str(row["status"]), 0) + 1
    lines = [f"Search `{tracker.search_name}`: {len(rows)} trials ("
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"), ranked by "
             f"`{tracker.objective}`; ended {status}."]
    if outcome.champion is not None:
        lines.append(f"Champion: trial `{outcome.champion_trial_id}`, `{tracker.objective}` = "
                     f"{outcome.champion_objective:.4f}, registered as "
                     f"`{outcome.champion.version_uri}` (`{outcome.champion.alias_uri}`).")
    else:
        lines.append("No champion was registered.")
    lines.append("Trials table and plot: `summary/`; each trial's outcome: its run's "
                 "`aitexvae.outcome` tag.")
    return "\n\n".join(lines)
