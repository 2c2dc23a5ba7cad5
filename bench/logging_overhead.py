"""Cost of MLflow tracking: the same search with tracking (SQLite store, the driver as the only
writer) vs with tracking off, through ``search.launcher`` on one local Ray.

Everything tracking does is inside the timed span: parent/child runs, a ``log_batch`` per
reported epoch, best-checkpoint uploads, a probe picture per trial, the summary plot and table,
and the champion's registration (pyfunc logged from code) — ``on_experiment_end`` runs inside
``Tuner.fit``. FIFO, so both searches train exactly the same trials for all epochs. The store
is created (schema migrations, ~12 s here, once per database) before timing, as it is for every
search after a user's first. Rounds alternate off/on so load from other processes hits both
alike; the ratio is the median of per-round ratios. Target <= 1.05.

    .venv/bin/python bench/logging_overhead.py [--trials 6] [--epochs 4] [--image-size 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from search import launcher
from search.mlflow_callback import tracking_hooks
from search.settings import SearchSettings


def run_search(args: argparse.Namespace, storage: Path, name: str, tracking_uri: str | None
               ) -> tuple[float, dict[str, float]]:
    settings = SearchSettings(name=name, image_size=args.image_size, num_samples=args.trials,
                              max_epochs=args.epochs, scheduler="fifo", seed=args.seed,
                              storage_path=str(storage), tracking=tracking_uri is not None,
                              tracking_uri=tracking_uri, verbose=0)
    prepared = launcher.prepare(settings)
    start = time.perf_counter()
    callbacks, _ = tracking_hooks(prepared) if tracking_uri else ([], None)
    outcome = launcher.run(prepared, callbacks=callbacks)
    seconds = time.perf_counter() - start
    stats = {"trials": len(outcome.results), "errors": outcome.results.num_errors}
    if callbacks:
        stats["tracking_failures"] = len(callbacks[0].outcome.failures)
        stats["registered"] = callbacks[0].outcome.champion is not None
    return seconds, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    work = Path(tempfile.mkdtemp(prefix="aitexvae-bench-logging-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    from mlflow import MlflowClient

    start = time.perf_counter()
    MlflowClient(tracking_uri=uri).search_experiments()  # creates and migrates the store
    print(f"store creation (once per database, not timed below): "
          f"{time.perf_counter() - start:.1f} s")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    # Warm-up (not timed): data generation/cache, worker imports, OS file cache.
    run_search(argparse.Namespace(**{**vars(args), "trials": 2, "epochs": 1}), work / "ray",
               "warmup", uri)
    ratios, times = [], {"off": [], "on": []}
    try:
        for round_ in range(args.rounds):
            off, off_stats = run_search(args, work / "ray", f"off-{round_}", None)
            on, on_stats = run_search(args, work / "ray", f"on-{round_}", uri)
            times["off"].append(off)
            times["on"].append(on)
            ratios.append(on / off)
            print(f"round {round_}: tracking off {off:7.1f} s {off_stats}   "
                  f"on {on:7.1f} s {on_stats}   ratio {on / off:.3f}")
    finally:
        ray.shutdown()
    print(f"{args.trials} trials x {args.epochs} epochs, {args.image_size}x{args.image_size}, "
          f"FIFO; median tracking off {statistics.median(times['off']):.1f} s, "
          f"on {statistics.median(times['on']):.1f} s")
    print(f"ratio logging_overhead: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
