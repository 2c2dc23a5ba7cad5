"""Finding a search's runs again after a restart, and what the tracker remembers per trial.

The per-trial state that decisions depend on (last logged epoch, best objective, a non-finite
value) is mirrored into the child run's tags as it changes, so a new driver rebuilds it from
one ``search_runs`` call instead of from Ray's pickled state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient

from tracking import settings as names


@dataclass
class TrialState:
    trial_id: str
    run_id: str | None = None
    max_epochs: int | None = None
    last_epoch: int = 0  # last epoch whose metrics are logged (a retried epoch is not re-logged)
    best: float = -math.inf  # objective, sign-adjusted so that larger is better
    best_epoch: int | None = None
    pending_best: bool = False  # the last result improved: its checkpoint is wanted
    nonfinite: str | None = None
    staged: Path | None = None  # local copy of the best checkpoint (this driver's life only)
    # The staged checkpoint's own validation scores of the probe patches (a strip-reference
    # scorer cannot score them apart from their strips); None with no probe or no scores.
    probe_scores: np.ndarray | None = None
    ended: bool = False


def _quoted(value: str) -> str:
    if "'" in value:
        raise ValueError(f"tag value {value!r} is invalid; allowed: no quotes")
    return f"'{value}'"


def find_parent(client: MlflowClient, experiment_id: str, tag: str, value: str):
    """The latest parent (search) run whose ``tag`` equals ``value``, or None."""
    runs = client.search_runs(
        [experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`{tag}` = {_quoted(value)} and tags.`{names.TAG_ROLE}` = 'search'")
    return runs[0] if runs else None


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    """Every run nested under ``parent_run_id`` (all pages)."""
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], max_results=1000, page_token=token,
            filter_string=f"tags.`{names.PARENT_TAG}` = {_quoted(parent_run_id)}")
        found.extend(page)
        token = page.token
        if not token:
            return found


def restored_trials(runs: list, sign: float) -> dict[str, TrialState]:
    """Trial id → state rebuilt from the child runs' tags."""
    trials = {}
    for run in runs:
        tags = run.data.tags
        trial_id = tags.get(names.TAG_TRIAL_ID)
        if trial_id is None:
            continue
        best = tags.get(names.TAG_BEST_OBJECTIVE)
        best_epoch = tags.get(names.TAG_BEST_EPOCH)
        trials[trial_id] = TrialState(
            trial_id, run.info.run_id, last_epoch=int(tags.get(names.TAG_LAST_EPOCH, 0)),
            best=sign * float(best) if best is not None else -math.inf,
            best_epoch=int(best_epoch) if best_epoch is not None else None,
            nonfinite=tags.get(names.TAG_NONFINITE), ended=run.info.status != "RUNNING")
    return trials
