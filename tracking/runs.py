"""One parent MLflow run per search and one nested child run per trial, written by the driver.

SQLite takes one writer at a time, so trials never touch MLflow: the driver forwards their
results here (``search/mlflow_callback.py``). Runs are found again by tags after a restart
(parent: search name; child: trial id), so ``--resume`` continues them instead of duplicating.
Child status: FINISHED (ran all epochs, or stopped early by the scheduler), FAILED (an error,
or a non-finite metric), KILLED (left unfinished by an interrupted search, or lost by Tune);
``aitexvae.outcome`` says which in words on every child, ``aitexvae.stop_reason`` why one did
not run all its epochs. Every metric of a result is one
``log_batch`` call with step = epoch.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

import vae
from tracking import settings as names
from tracking.artifacts import no_progress_bars, stage_checkpoint
from tracking.finish import SearchRecord, finish_search
from tracking.params import flatten_params, max_epochs_of, metrics_from_result, trial_params
from tracking.probe import ProbeSet, render_probe
from tracking.restore import TrialState, child_runs, find_parent, restored_trials
from tracking.settings import TrackingSettings, check_search_name
from tracking.writer import Writer
from vae import keys
from vae.checkpoint import SCORES_FILE, copy_for_pull
from vae.score import CALIBRATION_FILE, Calibration

logger = logging.getLogger(__name__)
# Copies a checkpoint's PULL_FILES into the folder it is given (see log_checkpoint).
Fetch = Callable[[Path], object]

LOST_REASON = ("lost by Tune: started just before the driver was killed and missing from its "
               "last experiment snapshot, so the resumed search did not continue it")


class SearchTracker:
    """Driver-side MLflow writer for one search (see module docstring)."""

    def __init__(self, settings: TrackingSettings, search_name: str, *,
                 probe: ProbeSet | None = None, validation_labels: np.ndarray | None = None,
                 objective: str = keys.OBJECTIVE, mode: str = keys.OBJECTIVE_MODE,
                 asynchronous: bool = True, dataset: Mapping[str, str] | None = None,
                 log_scale_keys: Collection[str] | None = None) -> None:
        check_search_name(search_name)
        if mode not in ("max", "min"):
            raise ValueError(f"unknown mode {mode!r}; choose one of ['max', 'min']")
        self.settings = settings.resolved()
        self.search_name = search_name
        self.probe, self.validation_labels = probe, validation_labels
        # ``name``, ``digest``, ``source`` and a JSON ``profile``: logged as the runs' dataset
        # input (and named by the champion's model metrics); MLflow keeps 36 digest characters.
        self.dataset = {**dataset, "digest": dataset["digest"][:36]} if dataset else None
        # Param names ("train/learning_rate") the space draws log-uniformly: the summary plot's
        # log axes. None when the space is not known (a resume that could not rebuild it).
        self.log_scale_keys = None if log_scale_keys is None else frozenset(log_scale_keys)
        self.objective = objective
        self.sign = 1.0 if mode == "max" else -1.0  # best = the largest sign * value
        uri = self.settings.tracking_uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.writer = Writer(asynchronous)
        self.trials: dict[str, TrialState] = {}
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.staging = Path(tempfile.mkdtemp(prefix="aitexvae-tracking-"))

    @property
    def example_images(self) -> np.ndarray | None:
        """A normal and a defective probe patch (uint8), the registered model's input example;
        two patches whatever the probe holds, since a strip-reference model scores no fewer."""
        if self.probe is None:
            return None
        labels = self.probe.labels
        picks = [int(np.flatnonzero(labels == label)[0]) for label in (0, 1)
                 if (labels == label).any()]
        return self.probe.images[picks if len(picks) == 2 else slice(2)]

    # -- the search ----------------------------------------------------------------------------
    def start_search(self, params: Mapping[str, Any] | None = None,
                     tags: Mapping[str, str] | None = None, resume: bool = False,
                     search_id: str | None = None, documents: Mapping[str, str] | None = None
                     ) -> str:
        """Create the parent run, or reopen it: the one tagged ``search_id`` (a restored
        callback keeps its id), else with ``resume`` this search name's latest one.
        ``documents``: text artifacts of a new parent (file name -> text)."""
        experiment = self.client.get_experiment_by_name(self.settings.experiment)
        self.experiment_id = experiment.experiment_id if experiment else \
            self.client.create_experiment(self.settings.experiment,
                                          artifact_location=names.artifact_root(
                                              self.settings.tracking_uri),
                                          tags={names.TAG_EXPERIMENT_KIND: names.EXPERIMENT_KIND})
        parent = self._find_parent(names.TAG_SEARCH_ID, search_id) if search_id else None
        if parent is None and resume:
            parent = self._find_parent(names.TAG_SEARCH, self.search_name)
        all_tags = {names.TAG_ROLE: "search", names.TAG_SEARCH: self.search_name,
                    names.TAG_CODE_VERSION: names.code_version(),
                    **({names.TAG_SEARCH_ID: search_id} if search_id else {}),
                    **{k: str(v) for k, v in (tags or {}).items() if v is not None}}
        if parent is None:
            run = self.client.create_run(self.experiment_id, run_name=self.search_name,
                                         tags=all_tags)
            self.parent_run_id = run.info.run_id
            items = [Param(k, v) for k, v in flatten_params(params or {}).items()]
            for start in range(0, len(items), 100):  # log_batch takes at most 100 params
                self.client.log_batch(self.parent_run_id, params=items[start:start + 100])
            self._log_dataset(self.parent_run_id)
            for name, text in (documents or {}).items():
                self.client.log_text(self.parent_run_id, text, name)
        else:
            self.parent_run_id = parent.info.run_id
            self.client.update_run(self.parent_run_id, status="RUNNING")
            all_tags.pop(names.TAG_SEARCH_ID, None)  # keep the id the parent was created with
            self.client.log_batch(self.parent_run_id, tags=[RunTag(k, v)
                                                            for k, v in all_tags.items()])
            self._restore_children()
        logger.info("MLflow: search %r is run %s in experiment %r (%s)", self.search_name,
                    self.parent_run_id, self.settings.experiment, self.settings.tracking_uri)
        self.writer.submit("warm-up", _warm_up)
        return self.parent_run_id

    def _find_parent(self, tag: str, value: str):
        return find_parent(self.client, self.experiment_id, tag, value)

    def children(self) -> list:
        """All child runs of this search's parent, as MLflow stores them."""
        return child_runs(self.client, self.experiment_id, self.parent_run_id)

    def _restore_children(self) -> None:
        self.trials.update(restored_trials(self.children(), self.sign))
        logger.info("MLflow: resuming search %r with %d existing trial run(s)", self.search_name,
                    len(self.trials))

    def end_search(self, status: str = "FINISHED", register: bool | None = None,
                   known_trials: Iterable[str] | None = None, reason: str | None = None
                   ) -> SearchRecord:
        """Summary, champion registration (when finished), parent status; waits for all writes.

        ``reason``: why a search that did not finish ended (the parent's stop reason).
        ``known_trials``: the trial ids Tune ended the search with. A run of any other trial
        still RUNNING belongs to a trial Tune lost (started just before a killed driver's last
        experiment snapshot; a resumed Tune samples a new trial instead): it ends KILLED.
        """
        register = self.settings.register if register is None else register
        known = None if known_trials is None else set(known_trials)
        for state in list(self.trials.values()):
            if state.ended:
                continue
            if known is not None and state.trial_id not in known:
                self.end_trial(state.trial_id, killed_reason=LOST_REASON)
            elif status != "FINISHED":  # interrupted: say so; a resume reopens the run
                self.end_trial(state.trial_id, killed_reason=f"search ended {status}")
        self.writer.flush()
        outcome = finish_search(self, status=status, register=register and status == "FINISHED",
                                reason=reason)
        self.writer.flush()
        outcome.failures = list(self.writer.failures)
        return outcome

    def close(self) -> None:
        """Stop the writer thread and delete this driver's local copies of checkpoints."""
        self.writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    # -- trials --------------------------------------------------------------------------------
    def start_trial(self, trial_id: str, config: Mapping[str, Any], name: str | None = None
                    ) -> None:
        state = self.trials.get(trial_id)
        max_epochs = max_epochs_of(config)
        if state is not None:  # a restored or retried trial: same run, running again
            state.ended, state.max_epochs = False, max_epochs or state.max_epochs
            self.writer.submit(f"reopen run of trial {trial_id}", self._reopen, state)
            return
        state = self.trials[trial_id] = TrialState(trial_id, max_epochs=max_epochs)
        params = trial_params(config)
        self.writer.submit(f"create run of trial {trial_id}", self._create_child, state,
                           name or trial_id, params)

    def _create_child(self, state: TrialState, name: str, params: dict[str, str]) -> None:
        tags = {names.PARENT_TAG: self.parent_run_id, names.TAG_ROLE: "trial",
                names.TAG_SEARCH: self.search_name, names.TAG_TRIAL_ID: state.trial_id}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        state.run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(state.run_id, params=items[start:start + 100])
        self._log_dataset(state.run_id)

    def _log_dataset(self, run_id: str) -> None:
        """The data as MLflow's dataset input: the runs table's Dataset column and its profile."""
        if self.dataset is None:
            return
        dataset = Dataset(name=self.dataset["name"], digest=self.dataset["digest"],
                          source_type="local", source=self.dataset["source"],
                          profile=self.dataset.get("profile"))
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[
            InputTag("mlflow.data.context", "training")])])

    def _reopen(self, state: TrialState) -> None:
        if state.run_id is None:
            return
        self.client.update_run(state.run_id, status="RUNNING")
        if names.TAG_STOP_REASON in self.client.get_run(state.run_id).data.tags:
            self.client.delete_tag(state.run_id, names.TAG_STOP_REASON)

    def log_result(self, trial_id: str, result: Mapping[str, Any], nonfinite: str | None = None
                   ) -> None:
        """Log one reported epoch: every ``split/quantity`` metric with step = epoch.

        ``nonfinite`` (a reason) marks the trial as stopped for non-finite values even when no
        logged metric is NaN itself (e.g. the loss went NaN inside the epoch)."""
        state = self.trials.get(trial_id)
        if state is None:
            self.start_trial(trial_id, result.get("config") or {})
            state = self.trials[trial_id]
        epoch = int(result.get(keys.EPOCH) or result.get("training_iteration") or
                    state.last_epoch + 1)
        metrics = metrics_from_result(result)
        if nonfinite is not None and state.nonfinite is None:
            state.nonfinite = f"{nonfinite} at epoch {epoch}"
        for key, value in metrics.items():
            if not math.isfinite(value) and state.nonfinite is None:
                state.nonfinite = f"{key}={value} at epoch {epoch}"
        value = metrics.get(self.objective)
        if value is not None and math.isfinite(value) and state.nonfinite is None \
                and self.sign * value > state.best:
            state.best, state.best_epoch, state.pending_best = self.sign * value, epoch, True
        if epoch <= state.last_epoch:
            return  # a retried epoch: MLflow keeps the first value of each step
        state.last_epoch = epoch
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, epoch) for k, v in metrics.items()]
        tags = [RunTag(names.TAG_LAST_EPOCH, str(epoch))]
        if state.best_epoch is not None:
            tags += [RunTag(names.TAG_BEST_OBJECTIVE, repr(self.sign * state.best)),
                     RunTag(names.TAG_BEST_EPOCH, str(state.best_epoch))]
            # numeric (the tag sorts as text): sorting the runs table by it is tune's ranking
            batch.append(Metric(names.best_metric(self.objective), self.sign * state.best,
                                now, epoch))
        if state.nonfinite is not None:
            tags.append(RunTag(names.TAG_NONFINITE, state.nonfinite))
        self.writer.submit(f"log epoch {epoch} of trial {trial_id}",
                           lambda: self.client.log_batch(state.run_id, metrics=batch, tags=tags))

    def wants_checkpoint(self, trial_id: str) -> bool:
        """True when the trial's latest result improved its objective (upload that checkpoint)."""
        state = self.trials.get(trial_id)
        return bool(state and state.pending_best and state.nonfinite is None)

    def log_checkpoint(self, trial_id: str, source: str | Path | Fetch) -> bool:
        """Upload the checkpoint as the trial's best if ``wants_checkpoint``; returns whether.

        ``source``: a local checkpoint folder, or a ``Fetch`` that copies the checkpoint's
        ``vae.checkpoint.PULL_FILES`` into a folder it is given (the Tune callback passes one
        reading Tune's storage). Copying, calibrating and uploading all run on the writer
        thread, so Tune's event loop (and every trial's ``tune.report``) never waits for them.
        """
        if not self.wants_checkpoint(trial_id):
            return False
        state = self.trials[trial_id]
        state.pending_best = False
        fetch = source if callable(source) else functools.partial(
            copy_for_pull, None, str(source))
        self.writer.submit(f"upload best checkpoint of trial {trial_id} (epoch "
                           f"{state.best_epoch})", self._upload_best, state, fetch,
                           state.best_epoch)
        return True

    def _upload_best(self, state: TrialState, fetch: Fetch, epoch: int | None) -> None:
        folder = self.staging / state.trial_id / f"e{epoch}"
        fetched = folder.with_name(folder.name + ".fetched")
        shutil.rmtree(fetched, ignore_errors=True)
        try:
            try:
                fetch(fetched)
            except FileNotFoundError:
                if state.best_epoch == epoch:
                    raise
                fetched_all = False
            else:  # scores are optional in a checkpoint, but not when Tune deleted them
                fetched_all = (fetched / SCORES_FILE).is_file() or state.best_epoch == epoch
            if not fetched_all:  # Tune deleted it for a better one, which is uploaded next
                logger.info("trial %s: checkpoint of epoch %s was superseded before its upload",
                            state.trial_id, epoch)
                return
            staged = stage_checkpoint(fetched, folder, self.validation_labels,
                                      self.settings.calibration_quantile)
            scores = fetched / SCORES_FILE
            probe_scores = np.load(scores, allow_pickle=False)[self.probe.indices] \
                if self.probe is not None and scores.is_file() else None
        finally:
            shutil.rmtree(fetched, ignore_errors=True)
        self.client.log_artifacts(state.run_id, str(staged), names.BEST_CHECKPOINT_PATH)
        previous, state.staged, state.probe_scores = state.staged, staged, probe_scores
        if previous is not None and previous != staged:
            shutil.rmtree(previous, ignore_errors=True)

    def end_trial(self, trial_id: str, error: str | None = None,
                  killed_reason: str | None = None) -> str:
        """Close the trial's run; returns the MLflow status it gets."""
        state = self.trials.get(trial_id)
        if state is None or state.ended:
            return "UNKNOWN" if state is None else "ENDED"
        state.ended = True
        # KILLED only for what an interruption left unfinished: a scheduler's early stop is
        # the search working (FINISHED, with the reason), a non-finite trial is a failure.
        if error is not None:
            status, reason = "FAILED", f"error: {error}"[:4000]
        elif state.nonfinite is not None:
            status, reason = "FAILED", f"non-finite metric: {state.nonfinite}"
        elif killed_reason is not None:
            status, reason = "KILLED", killed_reason
        elif state.max_epochs is not None and state.last_epoch < state.max_epochs:
            status, reason = "FINISHED", (f"stopped early by the scheduler after epoch "
                                          f"{state.last_epoch} of {state.max_epochs}")
        else:
            status, reason = "FINISHED", None
        self.writer.submit(f"close run of trial {trial_id}", self._close_trial, state, status,
                           reason)
        return status

    def _close_trial(self, state: TrialState, status: str, reason: str | None) -> None:
        """The probe picture, outcome tags and description, then the status (writer thread)."""
        if state.run_id is None:
            return
        if self.probe is not None:  # a missing picture must not leave the run RUNNING
            self.writer.attempt(f"probe picture of trial {state.trial_id}", self._log_probe,
                                state)
        if reason is not None:
            self.client.set_tag(state.run_id, names.TAG_STOP_REASON, reason)
        outcome = reason or f"completed all {state.last_epoch} epochs"
        self.client.set_tag(state.run_id, names.TAG_OUTCOME, outcome)
        best = "" if state.best_epoch is None else (
            f" Best `{self.objective}` = {self.sign * state.best:.4f} at epoch "
            f"{state.best_epoch}.")
        self.client.set_tag(state.run_id, names.TAG_NOTE,
                            f"Trial `{state.trial_id}`: {status}, {outcome}.{best}")
        self.client.set_terminated(state.run_id, status=status)

    def _log_probe(self, state: TrialState) -> None:
        folder = self.best_checkpoint(state.trial_id, state.run_id)
        if folder is None:
            return
        title = (f"{state.trial_id}  best epoch {state.best_epoch}  {self.objective}="
                 f"{self.sign * state.best:.4f}")
        path = self.staging / state.trial_id / "probe.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        calibration = folder / CALIBRATION_FILE  # accept/reject as the pulled model decides
        # The trial's own scores where this driver staged the checkpoint (one downloaded from
        # MLflow holds none): a strip reference cannot score the probe apart from its strips.
        render_probe(vae.load(folder), self.probe, title=title,
                     calibration=Calibration.from_json(calibration)
                     if calibration.is_file() else None,
                     scores=state.probe_scores if folder == state.staged else None).save(path)
        self.client.log_artifact(state.run_id, str(path), names.PROBE_PATH)

    def best_checkpoint(self, trial_id: str, run_id: str) -> Path | None:
        """The trial's best checkpoint: this driver's staged copy, else downloaded from MLflow
        (a resumed search's trials from before the restart); None when it has none."""
        state = self.trials.get(trial_id)
        if state is not None and state.staged is not None and state.staged.is_dir():
            return state.staged
        if not self.client.list_artifacts(run_id, names.BEST_CHECKPOINT_PATH):
            return None
        destination = Path(tempfile.mkdtemp(prefix="best-", dir=self.staging))
        with no_progress_bars():
            local = self.client.download_artifacts(run_id, names.BEST_CHECKPOINT_PATH,
                                                   str(destination))
        return Path(local)


def _warm_up() -> None:
    """matplotlib's import (~0.5 s), paid on the writer thread while trials train rather
    than in the serial tail of the search, where the summary plot needs it."""
    import matplotlib.figure  # noqa: F401
