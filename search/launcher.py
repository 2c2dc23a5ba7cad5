"""Build and run (or resume) a search on Ray Tune: ``prepare`` validates everything and loads the
data, ``run`` builds the Tuner and returns the summary.

Two steps so that a caller (``aitexvae tune``) can build its tracking callback between them: the
callback needs the search name, the resolved settings, the validation patches and the storage
path, all of which ``prepare`` resolves — before any trial starts, and before anything is
written. Nothing here prints; the CLI decides what the user sees.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from search import cluster
from search.importance import search_importances
from search.objective import ObjectiveError
from search.objective import resolve as resolve_objective
from search.report import SearchSummary, summarize, unfinished_trials
from search.searcher import STATE_FILE_PATTERN, SpaceSearcher, parse_state
from search.settings import RUNTIME_FIELDS, SETTINGS_FILE, SearchSettings
from search.space import SearchSpace, SpaceError, fit_to_image_size
from search.space_check import check_space
from search.space_file import load_space_file
from search.trainable import TrialData, train_vae
from search.waiting import FirstTrialWait
from vae import keys
from vae.config import ConfigError
from vae.data import DataError, Splits, load_splits

log = logging.getLogger(__name__)

# Tune snapshots the experiment state (which checkpoint each trial reached) at most this often;
# a driver killed between snapshots redoes the epochs since the last one. Tune's "auto" waits
# >= 10 s; our epochs take seconds, and a snapshot of a few dozen trials costs milliseconds.
EXPERIMENT_SNAPSHOT_S = "1"


class SearchError(ValueError):
    """A search that cannot start (bad settings, data, space, cluster); the message says why."""


@dataclass
class PreparedSearch:
    """Everything resolved and checked; nothing started but (maybe) a connection to Ray."""

    settings: SearchSettings  # resolved: named, absolute paths
    space: SearchSpace | None  # None when resuming (the searcher's saved state holds it)
    splits: Splits
    experiment_path: str
    resuming: bool
    cluster: cluster.ClusterInfo
    started_ray: bool = False
    gpus_per_trial: float = 0.0
    objective: str = "synthetic"  # resolved: search.objective.resolve
    # Resuming a search whose driver died before Tune's first experiment snapshot: Tune has
    # nothing to restore (Tuner.restore would start a different search from defaults), so the
    # saved search starts over: same settings, same space, same seeded sampler.
    restart: bool = False

    @property
    def searched_keys(self) -> list[str]:
        return self.space.searched_keys() if self.space else \
            list(self.settings_json().get("searched_keys", []))

    def settings_json(self) -> dict[str, Any]:
        path = cluster.join(self.experiment_path, SETTINGS_FILE)
        return json.loads(cluster.read_text(path)) if cluster.exists(path) else {}


@dataclass
class SearchOutcome:
    prepared: PreparedSearch
    results: Any  # ray.tune.ResultGrid
    summary: SearchSummary

    unfinished: int = 0  # trials neither TERMINATED nor ERROR (Ctrl-C), plus never started
    importances: dict[str, float] = field(default_factory=dict)  # search.importance, best first


def _space_for(settings: SearchSettings) -> SearchSpace:
    space = load_space_file(settings.space_file) if settings.space_file else SearchSpace()
    space = fit_to_image_size(space, settings.image_size)
    check_space(space, settings.base_config())
    return space


def prepare(settings: SearchSettings, *, resume: bool = False) -> PreparedSearch:
    """Validate space, data, storage and cluster, load the data once; raise ``SearchError``."""
    settings = settings.resolved()
    experiment_path = cluster.join(settings.storage_path, settings.name)
    try:
        restart = False
        if resume:
            settings = _saved_settings(experiment_path, settings)
            space = None
            if not _tune_recorded(experiment_path):
                space, restart = _saved_space(experiment_path, settings), True
            else:
                _check_searcher_state(experiment_path)
        else:
            if cluster.exists(experiment_path):
                raise SearchError(f"a search named {settings.name!r} already exists in "
                                  f"{experiment_path}; continue it with --resume "
                                  f"{settings.name} or choose another --name")
            space = _space_for(settings)
        if settings.data_root is not None and not os.access(settings.data_root, os.R_OK | os.X_OK):
            raise SearchError(f"--data-root {settings.data_root!r} is not a readable directory")
        splits = load_splits(settings.data_config())
        if not len(splits.val) or len(set(splits.val.labels.tolist())) < 2:
            raise SearchError(f"the validation split has {len(splits.val)} patches; val/auroc "
                              "needs held-out normal patches (give more defect-free strips)")
        real_defects = int(splits.real_val.labels.sum()) if splits.has_real_val else 0
        objective = resolve_objective(settings.objective, real_defects)
        cluster.check_storage(settings.storage_path)  # the last check before Ray starts
    except (SpaceError, ConfigError, DataError, ObjectiveError) as error:
        raise SearchError(str(error)) from None
    try:
        info, started = cluster.connect(settings.address)
    except cluster.ClusterError as error:
        raise SearchError(str(error)) from None
    try:
        gpus = cluster.check_resources(info, settings)
        cluster.warn_about_storage(info, settings.storage_path)
    except cluster.ClusterError as error:
        if started:
            ray.shutdown()
        raise SearchError(str(error)) from None
    if objective != "synthetic" or splits.has_real_val:
        log.info("ranking trials by %s: %s", keys.OBJECTIVE, objective)
    return PreparedSearch(settings, space, splits, experiment_path, resume, info, started, gpus,
                          objective, restart)


def _saved_settings(experiment_path: str, given: SearchSettings) -> SearchSettings:
    path = cluster.join(experiment_path, SETTINGS_FILE)
    # The settings are written before Tune starts: without them nothing was launched here. A
    # missing tuner.pkl or experiment state is a driver that died early (prepare restarts it).
    if not cluster.exists(path):
        raise SearchError(f"nothing to resume at {experiment_path}: no search was started there "
                          "(check --name/--resume and --storage-path)")
    cluster.check_trusted(experiment_path)  # before Tune unpickles anything from it
    saved = SearchSettings.from_dict(_saved_document(experiment_path)["settings"])
    return saved.for_resume({k: getattr(given, k) for k in RUNTIME_FIELDS})


def _saved_document(experiment_path: str) -> dict[str, Any]:
    """``aitexvae_search.json`` as ``_write_settings`` wrote it; a damaged one is one line."""
    path = cluster.join(experiment_path, SETTINGS_FILE)
    try:
        document = json.loads(cluster.read_text(path))
        if not isinstance(document, dict) or not isinstance(document.get("settings"), dict):
            raise ValueError("no 'settings' object")
    except (OSError, ValueError) as error:
        raise SearchError(f"cannot resume from {path}: it is not the settings file a search "
                          f"writes ({error}); start a new search with --name") from None
    return document


def _tune_recorded(experiment_path: str) -> bool:
    """Whether Tune left a readable snapshot of the experiment (what ``Tuner.restore``
    continues from). A damaged one (a full disk truncates it: Tune does not write it
    atomically) counts as none: Tune would silently start a different search from it."""
    states = [name for name in cluster.list_names(experiment_path)
              if name.startswith("experiment_state-") and name.endswith(".json")]
    if not states:
        return False
    path = cluster.join(experiment_path, max(states))  # Tune restores the newest
    try:
        json.loads(cluster.read_text(path))
    except (OSError, ValueError) as error:
        log.warning("Tune's experiment state %s is damaged (%s)", path, error)
        return False
    return True


def _check_searcher_state(experiment_path: str) -> None:
    """The searcher's saved asks and tells, read before Ray starts: a damaged or pickled file is
    one line here, not a traceback from inside ``Tuner.restore``."""
    for name in cluster.list_names(experiment_path):
        if fnmatch.fnmatch(name, STATE_FILE_PATTERN):
            path = cluster.join(experiment_path, name)
            try:
                parse_state(cluster.read_bytes(path), path)
            except ValueError as error:
                raise SearchError(f"cannot resume: {error}") from None


def _saved_space(experiment_path: str, settings: SearchSettings) -> SearchSpace:
    """The space of a search that starts over, refused if it is no longer the saved one (a
    --space file edited since the launch would make it a different search)."""
    space = _space_for(settings)
    saved = _saved_document(experiment_path)
    if saved.get("space") is not None and space.describe() != saved["space"]:
        raise SearchError(f"cannot resume {settings.name!r}: its driver died before any trial "
                          f"was recorded, and the search space now differs from the one saved "
                          f"at launch (--space {settings.space_file!r} changed); start a new "
                          "search with --name")
    log.info("resuming %s: Tune recorded no readable trial state (its driver died before the "
             "first snapshot, or the snapshot is damaged); starting the saved search over "
             "(same settings, space and seed)", settings.name)
    return space


def build_tuner(prepared: PreparedSearch, callbacks: Sequence[tune.Callback] = ()) -> tune.Tuner:
    settings = prepared.settings
    data = replace(TrialData.from_splits(prepared.splits, settings.train_patches, settings.seed,
                                         prepared.objective),
                   resume_window=settings.keep_checkpoints + 1)
    trainable = tune.with_parameters(train_vae, data=data)
    trainable = tune.with_resources(trainable, {"cpu": settings.cpus_per_trial,
                                                "gpu": prepared.gpus_per_trial})
    if prepared.resuming and not prepared.restart:
        tuner = tune.Tuner.restore(prepared.experiment_path, trainable, resume_errored=True)
        if callbacks:  # fresh callbacks (e.g. tracking) replace the ones pickled at launch
            tuner._local_tuner.get_run_config().callbacks = [*callbacks, FirstTrialWait()]
        return tuner
    if prepared.space is None:
        raise SearchError("a new search needs its space; prepare() resolves it")
    scheduler = (ASHAScheduler(time_attr=keys.EPOCH, max_t=settings.max_epochs,
                               grace_period=settings.grace_period,
                               reduction_factor=settings.reduction_factor)
                 if settings.scheduler == "asha" else FIFOScheduler())
    searcher = SpaceSearcher(prepared.space, search_alg=settings.search_alg, seed=settings.seed,
                             num_samples=settings.num_samples, metric=keys.OBJECTIVE,
                             mode=keys.OBJECTIVE_MODE)
    tune_config = tune.TuneConfig(
        metric=keys.OBJECTIVE, mode=keys.OBJECTIVE_MODE, search_alg=searcher,
        scheduler=scheduler, num_samples=settings.num_samples,
        max_concurrent_trials=settings.max_concurrent_trials or None,
        # A finished trial's worker process takes the next trial: no new process, no second
        # import of torch (seconds per trial on a small CPU). Trials share nothing else.
        reuse_actors=True,
        trial_dirname_creator=trial_dirname)
    run_config = tune.RunConfig(
        name=settings.name, storage_path=settings.storage_path,
        callbacks=[*callbacks, FirstTrialWait()],
        failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=settings.keep_checkpoints, checkpoint_score_attribute=keys.OBJECTIVE,
            checkpoint_score_order=keys.OBJECTIVE_MODE),
        verbose=settings.verbose)
    return tune.Tuner(trainable, param_space=settings.base_config(_channels(prepared.splits)),
                      tune_config=tune_config, run_config=run_config)


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _channels(splits: Splits) -> int:
    return int(splits.train.images.shape[1])


def _write_settings(prepared: PreparedSearch) -> None:
    document = {"settings": prepared.settings.to_dict(), "searched_keys": prepared.searched_keys,
                "space": prepared.space.describe() if prepared.space else None}
    cluster.write_text(cluster.join(prepared.experiment_path, SETTINGS_FILE),
                       json.dumps(document, indent=2, sort_keys=True) + "\n")


def run(prepared: PreparedSearch, *, callbacks: Sequence[tune.Callback] = (),
        on_search_end: Callable[[SearchOutcome], None] | None = None) -> SearchOutcome:
    """Run (or resume) the search; shut down a Ray we started, whatever happens."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_SNAPSHOT_S)
    # Tune also snapshots whenever a trial has checkpointed num_to_keep times since the last
    # one, and warns when that happens often; with epochs of seconds it is expected, not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    try:
        if not prepared.resuming:  # first: Tuner() writes tuner.pkl, and a resume reads these
            _write_settings(prepared)
        tuner = build_tuner(prepared, callbacks)
        try:
            results = tuner.fit()
            # Tune may end "normally" on a disk that filled under it, with its experiment state
            # half written; the callback then recorded the search FAILED, and so must we.
            _raise_on_storage_problem(prepared)
            summary = summarize(results)
            unfinished = _unfinished(prepared)
        except SearchError:
            raise
        except Exception:  # a full or read-only disk: Tune's own files there are broken too
            _raise_on_storage_problem(prepared)
            raise
        outcome = SearchOutcome(prepared, results, summary, unfinished,
                                search_importances(summary, prepared.searched_keys))
        if on_search_end is not None:
            try:
                on_search_end(outcome)
            except Exception:  # the search itself succeeded: keep its results, say what failed
                log.exception("the end-of-search hook failed; the search results are intact")
        return outcome
    finally:
        shutdown(prepared)


def _raise_on_storage_problem(prepared: PreparedSearch) -> None:
    problem = cluster.storage_problem(prepared.settings.storage_path, "--storage-path ")
    if problem is not None:
        raise SearchError(f"{problem}; the search stopped. Free space (or fix the permissions), "
                          f"then `aitexvae tune --resume {prepared.settings.name}` continues it")


def _unfinished(prepared: PreparedSearch) -> int:
    return unfinished_trials(prepared.experiment_path, prepared.settings.num_samples)


def shutdown(prepared: PreparedSearch) -> None:
    """Stop the local Ray that ``prepare`` started (a joined cluster keeps running)."""
    if prepared.started_ray and ray.is_initialized():
        ray.shutdown()


def search(settings: SearchSettings, *, resume: bool = False,
           callbacks: Sequence[tune.Callback] = (),
           on_search_end: Callable[[SearchOutcome], None] | None = None) -> SearchOutcome:
    """``prepare`` then ``run``: the whole search from Python."""
    return run(prepare(settings, resume=resume), callbacks=callbacks, on_search_end=on_search_end)
