"""Cost of MLflow tracking: the same search with tracking (SQLite store, the driver as the only
writer) vs with tracking off, through ``search.launcher`` on one local Ray.

Everything tracking does is inside the timed span: parent/child runs, a ``log_batch`` per
reported epoch, best-checkpoint uploads, a probe picture per trial, the summary plot and table,
and the champion's registration (pyfunc logged from code) — ``on_experiment_end`` runs inside
``Tuner.fit``. FIFO, so both searches train exactly the same trials for all epochs. The store
is created (schema migrations, ~6-12 s here, once per database) before timing, as it is for
every search after a user's first.

Wall time on a shared machine is noisy (other processes come and go), so three figures:
- wall time per search, rounds alternating off/on; the ratio is the median of per-round ratios;
- the trials' own mean ``train/epoch_time_s`` with vs without tracking (does logging slow
  training?);
- tracking's own cost in the tracked searches, measured where it happens: time inside the Tune
  callbacks (Tune's loop waits for them), CPU seconds of the writer thread, and the serial tail
  after the last trial (``on_experiment_end``). These do not depend on other load much.
Target <= 1.05.

    .venv/bin/python bench/logging_overhead.py [--trials 8] [--epochs 8] [--image-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import ray

from search import launcher
from search import mlflow_callback as glue
from search.settings import SearchSettings
from tracking import writer
from vae import keys

COST: dict[str, float] = defaultdict(float)  # tracking's own seconds, reset per search


def _instrument() -> None:
    """Accumulate time spent in the callback hooks and the writer thread's CPU time."""
    for name in ("setup", "on_trial_start", "on_trial_result", "on_checkpoint",
                 "on_trial_complete", "on_trial_error", "on_experiment_end"):
        hook = getattr(glue.MlflowTrackingCallback, name)

        def timed(*args, _hook=hook, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                key = "tail" if _name == "on_experiment_end" else "in_tune_loop"
                COST[key] += time.perf_counter() - start

        setattr(glue.MlflowTrackingCallback, name, functools.wraps(hook)(timed))
    run = writer.Writer._run

    def counted(self, what, function, args):
        start = time.thread_time()
        run(self, what, function, args)
        COST["writer_cpu"] += time.thread_time() - start

    writer.Writer._run = counted


def run_search(args: argparse.Namespace, storage: Path, name: str, tracking_uri: str | None
               ) -> tuple[float, float, dict]:
    settings = SearchSettings(name=name, image_size=args.image_size, num_samples=args.trials,
                              max_epochs=args.epochs, scheduler="fifo", seed=args.seed,
                              storage_path=str(storage), tracking=tracking_uri is not None,
                              tracking_uri=tracking_uri, verbose=0)
    prepared = launcher.prepare(settings)
    COST.clear()
    start = time.perf_counter()
    callbacks, _ = glue.tracking_hooks(prepared) if tracking_uri else ([], None)
    outcome = launcher.run(prepared, callbacks=callbacks)
    seconds = time.perf_counter() - start
    epoch_times = [row[keys.TRAIN_EPOCH_TIME_S] for result in outcome.results
                   for row in result.metrics_dataframe.to_dict("records")]
    info = {"trials": len(outcome.results), "errors": outcome.results.num_errors}
    if callbacks:
        info["registered"] = callbacks[0].outcome.champion is not None
        info["failures"] = len(callbacks[0].outcome.failures)
        info.update({k: round(v, 2) for k, v in COST.items()})
    return seconds, statistics.mean(epoch_times), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    _instrument()
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
    walls, epochs, ratios, costs = defaultdict(list), defaultdict(list), [], []
    try:
        for round_ in range(args.rounds):
            off, off_epoch, _ = run_search(args, work / "ray", f"off-{round_}", None)
            on, on_epoch, info = run_search(args, work / "ray", f"on-{round_}", uri)
            walls["off"].append(off), walls["on"].append(on)
            epochs["off"].append(off_epoch), epochs["on"].append(on_epoch)
            ratios.append(on / off)
            costs.append(info)
            print(f"round {round_}: tracking off {off:6.1f} s (epoch {off_epoch:.3f} s)   "
                  f"on {on:6.1f} s (epoch {on_epoch:.3f} s)   ratio {on / off:.3f}   {info}",
                  flush=True)
    finally:
        ray.shutdown()
    median_on = statistics.median(walls["on"])
    own = {key: statistics.median(c[key] for c in costs)
           for key in ("in_tune_loop", "tail", "writer_cpu")}
    print(f"\n{args.trials} trials x {args.epochs} epochs, {args.image_size}x{args.image_size}, "
          f"FIFO, {os.cpu_count()} CPUs, {args.rounds} rounds (medians):")
    print(f"  wall: off {statistics.median(walls['off']):.1f} s, on {median_on:.1f} s")
    print(f"  mean train/epoch_time_s: off {statistics.median(epochs['off']):.3f} s, "
          f"on {statistics.median(epochs['on']):.3f} s "
          f"(ratio {statistics.median(epochs['on']) / statistics.median(epochs['off']):.3f})")
    print(f"  tracking's own cost per search: {own['in_tune_loop']:.2f} s in Tune's loop, "
          f"{own['tail']:.2f} s serial tail, {own['writer_cpu']:.2f} CPU-s on the writer "
          f"thread; bound (loop + tail + writer CPU / {os.cpu_count()} CPUs) / wall = "
          f"{1 + (own['in_tune_loop'] + own['tail'] + own['writer_cpu'] / os.cpu_count()) / median_on:.3f}")
    print(f"ratio logging_overhead: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
