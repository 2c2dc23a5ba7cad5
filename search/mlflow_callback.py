"""Ray Tune → MLflow: a thin ``tune.Callback`` forwarding trial events to ``tracking``'s tracker.

All MLflow logic lives in ``tracking/`` (which never imports Ray); this is the only Ray code of
the tracking feature. Tune pickles its callbacks into ``tuner.pkl`` and uses the unpickled copy
on ``Tuner.restore``, so the callback holds only small, picklable things (settings, a search
id, the probe patches, the validation labels) and builds its tracker in ``setup``. The search
id makes a restored search find its parent run again (no duplicate parent or children).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from search.cluster import storage_problem
from search.keys import NONFINITE
from search.report import unfinished_trials
from vae import checkpoint as trial_checkpoint

logger = logging.getLogger(__name__)

FINAL_TRIAL_STATES = ("TERMINATED", "ERROR")


def _last_line(text: str | None, default: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else default


class MlflowTrackingCallback(tune.Callback):
    """Parent run per search, child run per trial, best checkpoints, probe pictures, champion."""

    def __init__(self, settings: Any, search_name: str, *, val_images: np.ndarray | None = None,
                 val_labels: np.ndarray | None = None, search_params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, str] | None = None, resume: bool = False,
                 asynchronous: bool = True, experiment_path: str | None = None,
                 num_samples: int | None = None, dataset: Mapping[str, str] | None = None,
                 documents: Mapping[str, str] | None = None,
                 log_scale_keys: Collection[str] | None = None) -> None:
        from tracking.probe import choose_probe

        self.settings = settings.resolved()
        self.search_name = search_name
        self.search_id = uuid.uuid4().hex  # pickled with the callback: the same after a restore
        self.search_params = dict(search_params or {})
        self.tags = dict(tags or {})
        self.documents = dict(documents or {})  # parent artifacts: file name -> text
        self.log_scale_keys = None if log_scale_keys is None else sorted(log_scale_keys)
        self.resume = resume
        self.asynchronous = asynchronous
        # Where Tune saves the experiment state and how many trials make the search complete:
        # on Ctrl-C, Tune saves the state, *then* stops the running trials (their in-memory
        # status becomes TERMINATED) and calls on_experiment_end — only the saved state and the
        # trial count tell an interrupted search from a finished one.
        self.experiment_path, self.num_samples = experiment_path, num_samples
        self.dataset = dict(dataset) if dataset else None  # see dataset_input
        self.val_labels = None if val_labels is None else np.asarray(val_labels).copy()
        self.probe = None
        if val_images is not None and val_labels is not None and len(val_labels):
            self.probe = choose_probe(val_images, val_labels, self.settings.probe_per_class,
                                      self.settings.probe_seed)
        self.outcome = None  # tracking.finish.SearchRecord once the search ends
        self._tracker = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tracker"] = None  # MLflow clients and threads stay in this process
        return state

    @property
    def tracker(self):
        if self._tracker is None:
            raise RuntimeError("MlflowTrackingCallback.setup() has not run")
        return self._tracker

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        from tracking.preflight import check_tracking_uri
        from tracking.runs import SearchTracker
        from tracking.settings import TAG_RAY_ADDRESS

        check_tracking_uri(self.settings.tracking_uri)
        self._tracker = SearchTracker(self.settings, self.search_name, probe=self.probe,
                                      validation_labels=self.val_labels,
                                      asynchronous=self.asynchronous, dataset=self.dataset,
                                      # (a callback pickled by an older version has none)
                                      log_scale_keys=getattr(self, "log_scale_keys", None))
        tags = {**self.tags, TAG_RAY_ADDRESS: self.tags.get(TAG_RAY_ADDRESS) or _ray_address()}
        self._tracker.start_search(self.search_params, tags, resume=self.resume,
                                   search_id=self.search_id, documents=self.documents)

    def _safely(self, what: str, function: Callable[..., Any], *args: Any) -> Any:
        """Tune re-raises a callback's exception and ends the search: tracking must not."""
        try:
            return function(*args)
        except Exception as error:  # logged and counted; the trials go on
            if self._tracker is not None:
                self._tracker.writer.report(what, error)
            else:
                logger.warning("MLflow tracking: %s failed: %s: %s", what, type(error).__name__,
                               error)
            return None

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._safely("start of a trial", self.tracker.start_trial, trial.trial_id, trial.config,
                     str(trial))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        reason = f"the trial reported {NONFINITE}=1" if result.get(NONFINITE) else None
        self._safely("a result", self.tracker.log_result, trial.trial_id, result, reason)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        def upload() -> None:
            # Only the files pull needs, read from Tune's storage on the tracker's writer
            # thread: nothing is downloaded or copied on Tune's event loop.
            fetch = functools.partial(trial_checkpoint.copy_for_pull, checkpoint.filesystem,
                                      checkpoint.path)
            self.tracker.log_checkpoint(trial.trial_id, fetch)

        self._safely("a checkpoint", upload)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._safely("end of a trial", self.tracker.end_trial, trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._safely("end of a failed trial", self.tracker.end_trial, trial.trial_id,
                     self._trial_error(trial))

    def _trial_error(self, trial) -> str:
        """The cause of a trial's failure in one line. A full or read-only storage path comes
        first: Tune's error file then lies on that disk, truncated or absent."""
        problem = self._storage_problem()
        if problem is not None:
            return problem
        try:
            return _last_line(trial.get_error(), "trial error")
        except Exception as error:  # an unreadable error file is no reason to lose the record
            return f"trial error (its error file is unreadable: {type(error).__name__})"

    def _storage_problem(self) -> str | None:
        return None if self.experiment_path is None else storage_problem(self.experiment_path)

    def on_experiment_end(self, trials: list, **info) -> None:
        # Tune also ends the experiment on Ctrl-C: only a complete search gets a champion.
        complete = all(trial.status in FINAL_TRIAL_STATES for trial in trials)
        if complete and self.experiment_path is not None:
            try:
                complete = unfinished_trials(self.experiment_path, self.num_samples) == 0
            except Exception as error:  # no readable state: trust the in-memory statuses
                logger.warning("experiment state unreadable (%s); ending the search on Tune's "
                               "in-memory trial statuses", error)
        status, reason = "FINISHED" if complete else "KILLED", None
        problem = self._storage_problem()
        if problem is not None:  # whatever Tune made of it, the search could not be recorded
            status, reason = "FAILED", f"{problem}; free space or fix the permissions"
        try:
            self.outcome = self._safely("end of the search", self.tracker.end_search,
                                        status, None, [t.trial_id for t in trials], reason)
        finally:
            self.tracker.close()
        failures = self.tracker.writer.failures
        if failures:
            logger.warning("MLflow: %d tracking step(s) failed during the search; first: %s",
                           len(failures), failures[0])


def _log_scale_params(prepared: Any) -> list[str] | None:
    """The params (``train/learning_rate``) the space draws log-uniformly; None without it."""
    if prepared.space is None:
        return None
    from tracking.params import flatten_params

    logs = {key: "" for key, dist in prepared.space.params.items() if getattr(dist, "log", False)}
    return sorted(flatten_params(logs))  # the params' own names: train/learning_rate


def _space_document(prepared: Any) -> dict[str, str]:
    """The resolved search space as the parent's ``search_space.yaml`` (a ``--space`` file)."""
    from search.space_file import dump_space
    from tracking.settings import SPACE_ARTIFACT

    if prepared.space is None:  # a resume that could not rebuild it: the first run has it
        return {}
    settings = prepared.settings
    header = (f"The search space of aitexvae search {settings.name!r}: "
              f"{settings.space_file or 'the built-in space'}, fitted to --image-size "
              f"{settings.image_size} (model.rank is capped at latent_dim - 1 when lowrank).\n"
              f"Search it again: aitexvae tune --space search_space.yaml")
    return {SPACE_ARTIFACT: dump_space(prepared.space, header)}


def dataset_fingerprint(splits: Any) -> str:
    """The patch-cache key of the data (it hashes the source files and patch settings), else a
    hash of the data summary when the cache is off."""
    cache_path = (getattr(splits.summary, "cache", None) or {}).get("path")
    if cache_path:
        return Path(cache_path).name
    document = json.dumps(splits.summary.to_dict(), sort_keys=True, default=str)
    return "summary-" + hashlib.sha256(document.encode()).hexdigest()[:16]


def dataset_input(splits: Any, search: Any) -> dict[str, str]:
    """The data set as MLflow's dataset input: where it is, its fingerprint, what was read."""
    summary = splits.summary
    source = search.data_root or f"embedded synthetic set ({summary.root})"
    profile = {"format": summary.format, "patch_size": summary.patch_size,
               "stride": summary.stride, "resize": summary.resize, "patches": summary.patches,
               "splits": summary.splits, "strips": summary.strips}
    return {"name": Path(search.data_root).name if search.data_root else "synthetic",
            "digest": dataset_fingerprint(splits), "source": source,
            "profile": json.dumps(profile, sort_keys=True)}


def tracking_hooks(prepared: Any) -> tuple[list[tune.Callback], Callable[[Any], list[str]]]:
    """``aitexvae tune``'s tracking: the callback and the end-of-search hook.

    Checks the store first (``TrackingUnavailableError`` within seconds, before Ray starts any
    trial). The hook returns the commands to print (browse the UI, pull the champion).
    """
    from tracking.preflight import check_tracking_uri
    from tracking.settings import (
        DEFAULT_EXPERIMENT,
        DEFAULT_MODEL_NAME,
        DEFAULT_TRACKING_URI,
        TAG_DATASET,
        TAG_RAY_ADDRESS,
        TAG_SEARCH_SPACE,
        TrackingSettings,
        next_step_lines,
    )

    search = prepared.settings
    # `registered_model` is honoured once SearchSettings has such a field (`--registered-model`).
    settings = TrackingSettings(
        tracking_uri=search.tracking_uri or DEFAULT_TRACKING_URI,
        experiment=search.experiment or DEFAULT_EXPERIMENT,
        model_name=getattr(search, "registered_model", None) or DEFAULT_MODEL_NAME).resolved()
    check_tracking_uri(settings.tracking_uri)
    val = prepared.splits.val
    tags = {TAG_SEARCH_SPACE: search.space_file or "default space",
            TAG_DATASET: dataset_fingerprint(prepared.splits),
            TAG_RAY_ADDRESS: prepared.cluster.address or "",  # "" → filled in by setup()
            "aitexvae.ray_experiment_path": prepared.experiment_path}
    # Unset settings (None: "the default for the data") are left out rather than logged "None".
    params = {k: v for k, v in search.to_dict().items()
              if k not in ("tracking", "tracking_uri", "experiment", "verbose") and v is not None}
    params["objective"] = prepared.objective  # resolved ("auto" says nothing in the runs table)
    params["searched_keys"] = ",".join(prepared.searched_keys)
    callback = MlflowTrackingCallback(settings, search.name, val_images=val.images,
                                      val_labels=val.labels, search_params=params, tags=tags,
                                      resume=prepared.resuming,
                                      experiment_path=prepared.experiment_path,
                                      num_samples=search.num_samples,
                                      dataset=dataset_input(prepared.splits, search),
                                      documents=_space_document(prepared),
                                      log_scale_keys=_log_scale_params(prepared))

    def on_search_end(outcome: Any) -> list[str]:
        result = callback.outcome  # None when the end of the search could not be tracked
        champion = result.champion if result is not None else None
        winner = getattr(getattr(outcome, "summary", None), "winner", None)
        if champion is not None and winner is not None \
                and result.champion_trial_id != winner.trial_id:
            logger.warning("MLflow champion (trial %s) differs from the search's winner (trial "
                           "%s)", result.champion_trial_id, winner.trial_id)
        importances = getattr(outcome, "importances", None)
        if result is not None and importances:
            from tracking.importance import log_importances

            ranked = sum(t.ranked for t in outcome.summary.trials)
            try:
                log_importances(settings.tracking_uri, result.parent_run_id, importances, ranked)
            except Exception as error:  # the search and its records are intact without them
                logger.warning("MLflow: importances not logged: %s: %s",
                               type(error).__name__, error)
        fidelity = getattr(getattr(outcome, "summary", None), "fidelity", None)
        if result is not None and fidelity is not None:
            from tracking.fidelity import log_fidelity

            try:
                log_fidelity(settings.tracking_uri, result.parent_run_id, fidelity.spearman,
                             fidelity.trials, prepared.objective,
                             fidelity.describe(prepared.objective))
            except Exception as error:  # as above: a summary figure, not a record
                logger.warning("MLflow: proxy fidelity not logged: %s: %s",
                               type(error).__name__, error)
        lines = next_step_lines(settings.tracking_uri, settings.model_name, settings.alias,
                                registered=champion is not None,
                                page=result.page if result is not None else "")
        if champion is not None:
            lines.insert(1, f"# champion: {champion.version_uri} (trial "
                            f"{result.champion_trial_id}) = {champion.alias_uri}")
        return lines

    return [callback], on_search_end


def _ray_address() -> str:
    if not ray.is_initialized():  # get_runtime_context() would start a local Ray
        return "not connected"
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # an old or odd connection: nothing to record
        return "unknown"
