"""``aitexvae tune``: the hyperparameter search from the command line.

A thin layer over ``search.launcher`` (``prepare`` → tracking hooks → ``run``). Tracking plugs in
through ``search.mlflow_callback.tracking_hooks(prepared) -> (callbacks, on_search_end)``:
``callbacks`` are ``tune.Callback``s run on the driver; ``on_search_end(outcome)`` runs after the
search and may return the "next commands" lines to print. Without that module, or with
``--no-tracking``, the search runs untracked.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from search.objective import CHOICES as OBJECTIVE_CHOICES
from search.objective import DEFAULT_WITH_LABELS, MIN_REAL_DEFECTS
from search.settings import (
    REAL_DEFAULTS,
    SCHEDULERS,
    SEARCH_ALGORITHMS,
    SYNTHETIC_DEFAULTS,
    SearchSettings,
)
from vae.config import ConfigError
from vae.data.config import VAL_DEFECTS

EPILOG = """\
examples:
  aitexvae tune                                  # the embedded default: synthetic data, local Ray
  aitexvae tune --data-root AITEX --format aitex --num-samples 40 --gpus-per-trial 0.25
  aitexvae tune --space space.yaml --search-alg optuna --scheduler fifo
  aitexvae tune --address auto --storage-path s3://bucket/ray_results   # an existing cluster
  aitexvae tune --resume NAME                    # continue an interrupted search

--space FILE: YAML mapping of config keys to a fixed value or one distribution:
  model.latent_dim: {choice: [16, 32, 64]}       train.learning_rate: {loguniform: [1e-4, 1e-2]}
  model.dropout: {uniform: [0.0, 0.3]}           train.batch_size: {randint: [8, 32]}
  loss.kl_weight: 0.5                            (lograndint: integers on a log scale)
Naming loss.mse_weight / loss.bce_weight / loss.fft_weight replaces the default loss mix.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune", help="search VAE hyperparameters with Ray Tune",
        description="Search VAE hyperparameters on Ray Tune, ranking trials by val/objective: "
                    "val/auroc (held-out normal patches vs the same patches with synthetic "
                    "defects), val/real_auroc (held-out real defects, when the data has them), "
                    "or their mean (--objective).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--name", help="experiment name (default: tune-<date>-<time>)")
    add("--resume", metavar="NAME", help="continue the interrupted search NAME with its saved "
        "settings (finished trials stay finished; running ones resume from their checkpoints)")
    data = parser.add_argument_group("data")
    data.add_argument("--data-root", help="AITEX or folder data set (default: the synthetic set, "
                      "generated on first use)")
    data.add_argument("--format", dest="data_format", choices=("aitex", "folder"),
                      help="layout of --data-root")
    data.add_argument("--image-size", type=int, help="patch and model input size (default "
                      f"{SYNTHETIC_DEFAULTS['image_size']} synthetic, "
                      f"{REAL_DEFAULTS['image_size']} real data)")
    data.add_argument("--train-patches", type=int, default=0,
                      help="train on a seeded random subset of N patches (default 0: all)")
    data.add_argument("--train-stride", type=int, default=None,
                      help="stride of the training patches only; below the patch size they "
                           "overlap (default: the patch size; val and test keep it)")
    data.add_argument("--resize", type=int, default=None, metavar="N",
                      help="resize every image to NxN before cutting patches; 0: native "
                           "resolution (default: the patch size for --format folder, one patch "
                           "per image as in anomalib; 0 for aitex)")
    data.add_argument("--val-defects", choices=VAL_DEFECTS, default="builtin",
                      help="synthetic validation defects: builtin sizes and contrasts, or "
                           "matched to the real defects held out for validation (when any)")
    budget = parser.add_argument_group("search")
    budget.add_argument("--num-samples", type=int, help="trials (default "
                        f"{SYNTHETIC_DEFAULTS['num_samples']} synthetic, "
                        f"{REAL_DEFAULTS['num_samples']} real data)")
    budget.add_argument("--max-epochs", type=int, help="epochs of a trial that is never stopped "
                        f"(default {SYNTHETIC_DEFAULTS['max_epochs']} synthetic, "
                        f"{REAL_DEFAULTS['max_epochs']} real data)")
    budget.add_argument("--space", dest="space_file", metavar="FILE",
                        help="YAML overrides of the default search space (format below)")
    budget.add_argument("--objective", choices=OBJECTIVE_CHOICES, default="auto",
                        help="what ranks trials: synthetic (val/auroc: synthetic defects), real "
                             "(val/real_auroc: held-out real defects), blend (their mean); auto: "
                             f"{DEFAULT_WITH_LABELS} with >= {MIN_REAL_DEFECTS} held-out "
                             "defective patches, blend with fewer, synthetic without labels")
    budget.add_argument("--search-alg", choices=SEARCH_ALGORITHMS, default="random")
    budget.add_argument("--scheduler", choices=SCHEDULERS, default="asha")
    budget.add_argument("--grace-period", type=int, default=None,
                        help="ASHA: epochs before a trial can be stopped (default: a quarter of "
                             "--max-epochs; early val/auroc says little about the final one)")
    budget.add_argument("--reduction-factor", type=float, default=2.0,
                        help="ASHA: keep 1/factor of the trials at each rung (default 2)")
    budget.add_argument("--seed", type=int, default=0, help="sampler and training seed")
    run = parser.add_argument_group("resources and storage")
    run.add_argument("--max-concurrent-trials", type=int, default=0,
                     help="cap on trials running at once (default 0: as resources allow)")
    run.add_argument("--cpus-per-trial", type=float, default=1.0,
                     help="CPUs per trial; torch uses that many threads (default 1)")
    run.add_argument("--gpus-per-trial", type=float, default=None,
                     help="GPUs per trial, fractional to share one (e.g. 0.25; default 1 on a "
                          "cluster with GPUs, else 0)")
    run.add_argument("--max-failures", type=int, default=2,
                     help="retries of a failed trial, from its last checkpoint (default 2)")
    run.add_argument("--keep-checkpoints", type=int, default=2,
                     help="checkpoints kept per trial, best by val/objective, plus the latest")
    run.add_argument("--address", help="join a running Ray cluster: 'auto' or host:port "
                     "(default: start a local Ray)")
    run.add_argument("--storage-path", default="ray_results",
                     help="results and checkpoints: a directory, or s3://... / gs://...; a "
                          "multi-node cluster needs storage every node shares "
                          "(default ./ray_results)")
    track = parser.add_argument_group("tracking (MLflow)")
    track.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlflow.db)")
    track.add_argument("--experiment", help="MLflow experiment name (default aitexvae)")
    track.add_argument("--no-tracking", dest="tracking", action="store_false",
                       help="do not log to MLflow")
    parser.set_defaults(func=main)


def settings_from_args(args: argparse.Namespace) -> SearchSettings:
    fields = ("name", "data_root", "data_format", "image_size", "num_samples", "max_epochs",
              "train_patches", "train_stride", "resize", "objective", "val_defects",
              "scheduler", "grace_period", "reduction_factor", "search_alg", "space_file",
              "seed", "max_concurrent_trials", "cpus_per_trial", "gpus_per_trial",
              "max_failures", "keep_checkpoints", "address", "storage_path", "tracking",
              "tracking_uri", "experiment")
    values: dict[str, Any] = {f: getattr(args, f) for f in fields}
    if args.resume:
        values["name"] = args.resume
    return SearchSettings(**values)


def _tracking_hooks(prepared: Any) -> tuple[list, Any]:
    if not prepared.settings.tracking:
        return [], None
    from search.mlflow_callback import tracking_hooks

    callbacks, on_end = tracking_hooks(prepared)
    return list(callbacks), on_end


def _fail(message: str) -> int:
    print(f"aitexvae tune: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    from search import launcher
    from search.report import format_summary
    from tracking.preflight import TrackingUnavailableError, check_tracking_uri

    try:
        settings = settings_from_args(args)
        if settings.tracking and settings.tracking_uri:
            # A named store (often a server) is checked before Ray starts or data is read;
            # the default store is checked once the search's saved settings are known.
            check_tracking_uri(settings.tracking_uri)
        prepared = launcher.prepare(settings, resume=bool(args.resume))
    except (ConfigError, launcher.SearchError) as error:
        return _fail(str(error))
    except TrackingUnavailableError as error:
        return _fail(f"tracking: {error}")
    try:
        callbacks, on_end = _tracking_hooks(prepared)
    except Exception as error:  # a tracking store that cannot be used: say so before any trial
        launcher.shutdown(prepared)
        return _fail(f"tracking: {error}")
    ending = {}

    def end(outcome: launcher.SearchOutcome) -> None:
        ending["lines"] = on_end(outcome) if on_end is not None else None

    try:
        outcome = launcher.run(prepared, callbacks=callbacks, on_search_end=end)
    except KeyboardInterrupt:  # a second Ctrl-C: Tune had no time to save; say how to go on
        print(f"\ninterrupted; continue with: aitexvae tune --resume {prepared.settings.name} "
              f"--storage-path {shlex.quote(prepared.settings.storage_path)}", file=sys.stderr)
        return 130
    except launcher.SearchError as error:  # storage full or read-only mid-search
        return _fail(str(error))
    name = prepared.settings.name
    commands = list(ending.get("lines") or [])
    if outcome.unfinished:
        storage = shlex.quote(prepared.settings.storage_path)
        commands.insert(0, f"aitexvae tune --resume {name} --storage-path {storage}"
                           f"   # {outcome.unfinished} trial(s) did not finish")
    print(format_summary(outcome.summary, prepared.searched_keys, next_commands=commands,
                         importances=outcome.importances, objective=prepared.objective))
    print(f"\nResults and checkpoints: {prepared.experiment_path}")
    if outcome.unfinished:
        return 130  # interrupted (Ctrl-C): the summary is of what ran; --resume continues
    return 0 if outcome.summary.winner is not None else 1
