"""The end of a search in MLflow: the trials table and summary plot, the champion's
registration, the parent's status and description.

It runs after the tracker's writer has been flushed and reads what MLflow stores, so a resumed
search's summary covers the trials from before the restart too. It works on any ``Search``
(the protocol below; ``tracking.runs.SearchTracker`` is the one in use) and never on a
tracker's internals, so the import goes one way: runs -> finish.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric

from tracking import settings as names
from tracking.registry import RegisteredChampion, register_champion
from tracking.settings import TrackingSettings
from tracking.summary import FIXED_COLUMNS, plot_summary, searched_keys, write_table
from tracking.writer import Writer
from vae.io import CONFIG_FILE

logger = logging.getLogger(__name__)
MODEL_METRIC_PREFIXES = ("train/", "val/")  # on the logged model (not system/, not best/)


class Search(Protocol):
    """What closing a search needs to know about it."""

    client: MlflowClient
    settings: TrackingSettings
    writer: Writer
    search_name: str
    experiment_id: str | None
    parent_run_id: str | None
    objective: str
    sign: float  # +1 when the objective is maximised, -1 when minimised
    staging: Path  # this driver's scratch folder
    example_images: np.ndarray | None  # a few uint8 validation patches: the model's input example
    dataset: Mapping[str, str] | None  # name, digest, source, profile: the runs' dataset input
    log_scale_keys: frozenset[str] | None  # params searched log-uniformly; None: not known

    def children(self) -> list: ...

    def best_checkpoint(self, trial_id: str, run_id: str) -> Path | None: ...


@dataclass
class SearchRecord:
    """What MLflow holds of a search once it has ended."""

    parent_run_id: str
    status: str
    trials: int
    page: str = ""  # the MLflow UI fragment of its trials, best first (settings.trials_page)
    champion: RegisteredChampion | None = None
    champion_trial_id: str | None = None
    champion_objective: float | None = None
    failures: list[str] = field(default_factory=list)  # MLflow writes that failed (logged)


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


def _best_epoch_metrics(tracker: Search, run_id: str, step: int) -> list[Metric]:
    """The run's logged points at its best epoch, exactly as stored (timestamps included)."""
    points = []
    for key in sorted(tracker.client.get_run(run_id).data.metrics):
        points += [m for m in tracker.client.get_metric_history(run_id, key) if m.step == step][:1]
    return points


def _description(tracker: Search, row: dict[str, object], folder: Path,
                 metrics: list[Metric]) -> str:
    step = int(row["best_epoch"])  # type: ignore[arg-type]
    config = json.loads((folder / CONFIG_FILE).read_text()).get("config", {})
    lines = [f"Champion of search `{tracker.search_name}`: trial `{row['trial_id']}` "
             f"(run `{row['run_id']}`), best {tracker.objective} = "
             f"{float(row['best_objective']):.4f} at epoch {step}.", "", "Metrics at that epoch:",
             ""]
    lines += [f"- `{m.key}`: {m.value:.6g}" for m in metrics]
    lines += ["", "Config:", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```"]
    return "\n".join(lines)


def _log_on_model(tracker: Search, run_id: str, model_id: str | None, metrics: list[Metric],
                  description: str) -> None:
    """The champion's description and best-epoch metrics on its logged model (the model page's
    Description, Metrics and "Datasets used").

    The metrics are the run's own points again, identical in key, value, step and timestamp:
    the store keeps a run's identical points once, so the run's history gains no duplicate.
    """
    if not model_id:
        return
    tracker.client.set_logged_model_tags(model_id, {names.TAG_NOTE: description})
    dataset = tracker.dataset or {}
    tracker.client.log_batch(run_id, metrics=[  # the model's figures, not its trial's machine
        Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id,
               dataset_name=dataset.get("name"), dataset_digest=dataset.get("digest"))
        for m in metrics if m.key.startswith(MODEL_METRIC_PREFIXES)])


def _register_best(tracker: Search, candidates: list[dict[str, object]],
                   outcome: SearchRecord) -> None:
    for row in candidates:  # best first; one without a checkpoint artifact cannot be pulled
        weights = tracker.best_checkpoint(str(row["trial_id"]), str(row["run_id"]))
        if weights is None:
            logger.warning("MLflow: trial %s has no best checkpoint artifact; trying the next",
                           row["trial_id"])
            continue
        settings, run_id = tracker.settings, str(row["run_id"])
        best_epoch = int(row["best_epoch"])  # type: ignore[arg-type]
        metrics = _best_epoch_metrics(tracker, run_id, best_epoch)
        description = _description(tracker, row, weights, metrics)
        outcome.champion = register_champion(
            tracker.client, settings.tracking_uri, run_id, weights,
            settings.model_name, settings.alias, description,
            tags={"search": tracker.search_name, "trial_id": str(row["trial_id"]),
                  tracker.objective: str(row["best_objective"])},
            input_example=tracker.example_images)
        _log_on_model(tracker, run_id, outcome.champion.model_id, metrics, description)
        outcome.champion_trial_id = str(row["trial_id"])
        outcome.champion_objective = float(row["best_objective"])  # type: ignore[arg-type]
        tracker.client.log_metric(tracker.parent_run_id, names.best_metric(tracker.objective),
                                  outcome.champion_objective)
        tracker.client.set_tag(tracker.parent_run_id, names.TAG_CHAMPION,
                               outcome.champion.version_uri)
        return
    logger.warning("MLflow: no trial of search %r has a finite %s and a checkpoint; nothing "
                   "registered", tracker.search_name, tracker.objective)


def _summarise(tracker: Search, rows: list[dict[str, object]], outcome: SearchRecord) -> None:
    param_keys = sorted({key for row in rows for key in row} - set(FIXED_COLUMNS))
    folder = tracker.staging / "summary"
    uri = tracker.settings.tracking_uri
    eid, base = tracker.experiment_id, uri.rstrip("/")
    run_link = ((lambda run_id: f"{base}/{names.run_page(eid, run_id)}")
                if uri.startswith(("http://", "https://")) else None)  # a file store has no UI
    write_table(rows, param_keys, folder, run_link=run_link)
    plot_summary(rows, searched_keys(rows, param_keys), tracker.objective,
                 folder / "search_summary.png", champion=outcome.champion_trial_id,
                 log_keys=tracker.log_scale_keys)
    tracker.client.log_artifacts(tracker.parent_run_id, str(folder), names.SUMMARY_PATH)


def finish_search(tracker: Search, status: str, register: bool,
                  reason: str | None = None) -> SearchRecord:
    """Register the best eligible trial (``register``), summarise, close the parent."""
    rows = [_row(run) for run in tracker.children()]
    outcome = SearchRecord(parent_run_id=tracker.parent_run_id, status=status, trials=len(rows),
                           page=names.trials_page(tracker.experiment_id, tracker.search_name,
                                                  tracker.objective, tracker.sign > 0))
    candidates = sorted((row for row in rows if eligible(row)),
                        key=lambda row: -tracker.sign * float(row["best_objective"]))
    # One failing step must not leave the parent RUNNING: each is attempted and reported.
    # The champion first, so that the summary can mark it.
    if register:
        tracker.writer.attempt("registration of the champion", _register_best, tracker,
                               candidates, outcome)
    tracker.writer.attempt("summary of the search", _summarise, tracker, rows, outcome)
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


def _search_note(tracker: Search, rows: list[dict[str, object]], status: str,
                 outcome: SearchRecord) -> str:
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
