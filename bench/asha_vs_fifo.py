"""ASHA vs FIFO: compute (trial-epochs) and wall time to reach a val/auroc within 0.02 of FIFO's
best, on the same space, seed, data and trial configs.

For each seed both searches draw the same configs (the random sampler is seeded and does not
depend on results) and train each the same way (seeded, same threads), so a config's per-epoch
val/auroc is the same under both; ASHA only decides which trials stop early. A driver-side
callback records every report in arrival order: compute to target = reports (trial-epochs)
received until the first val/auroc >= FIFO's best - 0.02; wall = seconds from the search start
to that report. Which trial reaches the target first, and when FIFO gets to it, depends on the
sampled order, so several seeds are run and the median per-seed ratio is printed (inf when ASHA
stopped the trials that would have reached the target). ASHA runs with the service's defaults
(grace period a quarter of the epochs, reduction factor 2) unless given. Goal: <= 0.4.

    .venv/bin/python bench/asha_vs_fifo.py [--seeds 0 1 2] [--trials 16] [--epochs 12]
        [--image-size 64] [--grace-period N] [--reduction-factor F] [--dump FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import tempfile
import time

from ray import tune

from search import launcher
from search.settings import SearchSettings
from vae import keys

TOLERANCE = 0.02


class ReportLog(tune.Callback):
    """(seconds since setup, trial id, epoch, val/auroc) for every report, in arrival order."""

    def __init__(self) -> None:
        self.reports: list[tuple[float, str, int, float]] = []
        self.start = time.perf_counter()

    def setup(self, **info) -> None:
        self.start = time.perf_counter()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.reports.append((time.perf_counter() - self.start, trial.trial_id,
                             int(result[keys.EPOCH]), float(result[keys.VAL_AUROC])))


def run(args: argparse.Namespace, scheduler: str, seed: int, storage: str) -> ReportLog:
    settings = SearchSettings(name=f"{scheduler}-{seed}", image_size=args.image_size,
                              num_samples=args.trials, max_epochs=args.epochs,
                              scheduler=scheduler, grace_period=args.grace_period,
                              reduction_factor=args.reduction_factor, seed=seed,
                              # ASHA stops by the objective; this bench measures val/auroc
                              objective="synthetic",
                              storage_path=storage, tracking=False, verbose=0)
    log = ReportLog()
    outcome = launcher.search(settings, callbacks=[log])
    assert outcome.results.num_errors == 0
    return log


def to_target(log: ReportLog, target: float) -> tuple[int, float] | None:
    """(trial-epochs, seconds) until the first report >= target; None if never reached."""
    for count, (seconds, _, _, auroc) in enumerate(log.reports, start=1):
        if math.isfinite(auroc) and auroc >= target:
            return count, seconds
    return None


def compare(args: argparse.Namespace, seed: int, storage: str, dump: dict) -> dict[str, float]:
    fifo = run(args, "fifo", seed, storage)
    asha = run(args, "asha", seed, storage)
    dump[str(seed)] = {"fifo": fifo.reports, "asha": asha.reports}
    best = max(a for *_, a in fifo.reports if math.isfinite(a))
    target = best - TOLERANCE
    reached = {}
    for name, log in (("fifo", fifo), ("asha", asha)):
        reached[name] = to_target(log, target)
        best_here = max(a for *_, a in log.reports if math.isfinite(a))
        where = (f"reached at {reached[name][0]} trial-epochs, {reached[name][1]:.1f} s"
                 if reached[name] else "never reached")
        print(f"seed {seed} {name}: {len(log.reports)} trial-epochs in "
              f"{log.reports[-1][0]:.1f} s, best val/auroc {best_here:.4f}; target "
              f"{target:.4f} {where}", flush=True)
    total = len(asha.reports) / len(fifo.reports)
    if reached["asha"] is None:
        return {"compute": math.inf, "wall": math.inf, "total": total}
    return {"compute": reached["asha"][0] / reached["fifo"][0],
            "wall": reached["asha"][1] / reached["fifo"][1], "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--grace-period", type=int, default=None)
    parser.add_argument("--reduction-factor", type=float, default=2.0)
    parser.add_argument("--dump", help="write every report of every search to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("AITEXVAE_HOME", os.path.join(tempfile.gettempdir(), "aitexvae-bench"))
    ratios, dump = [], {}
    with tempfile.TemporaryDirectory(prefix="asha-vs-fifo-") as storage:
        for seed in args.seeds:
            ratios.append(compare(args, seed, storage, dump))
            r = ratios[-1]
            print(f"seed {seed}: ASHA/FIFO compute to target {r['compute']:.3f}, wall to target "
                  f"{r['wall']:.3f}, total compute {r['total']:.3f}", flush=True)
    if args.dump:
        with open(args.dump, "w") as file:
            json.dump(dump, file)
    for key in ("wall", "total"):
        print(f"median ASHA/FIFO {key}: {statistics.median(r[key] for r in ratios):.3f}")
    print(f"ratio asha_vs_fifo_compute: {statistics.median(r['compute'] for r in ratios):.3f}")


if __name__ == "__main__":
    main()
