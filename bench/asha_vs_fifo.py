"""ASHA vs FIFO: compute (trial-epochs) and wall time to reach a val/auroc within 0.02 of FIFO's
best, on the same space, seed, data and trial configs.

Both searches draw the same configs (the random sampler is seeded and does not depend on
results) and train each the same way (seeded, same threads), so a config's per-epoch val/auroc is
the same under both; ASHA only decides which trials stop early. A driver-side callback records
every report in arrival order: compute to target = reports (trial-epochs) received until the
first val/auroc >= FIFO's best - 0.02; wall = seconds from the search start to that report.
FIFO is run first (it defines the target), then ASHA. Goal: ASHA/FIFO compute <= 0.4.

    .venv/bin/python bench/asha_vs_fifo.py [--trials 16] [--epochs 12] [--image-size 64]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
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


def run(args: argparse.Namespace, scheduler: str, storage: str) -> tuple[ReportLog, float]:
    settings = SearchSettings(name=scheduler, image_size=args.image_size,
                              num_samples=args.trials, max_epochs=args.epochs,
                              scheduler=scheduler, grace_period=args.grace_period,
                              reduction_factor=args.reduction_factor, seed=args.seed,
                              storage_path=storage, tracking=False, verbose=0)
    log = ReportLog()
    start = time.perf_counter()
    outcome = launcher.search(settings, callbacks=[log])
    assert outcome.results.num_errors == 0
    return log, time.perf_counter() - start


def to_target(log: ReportLog, target: float) -> tuple[int, float] | None:
    """(trial-epochs, seconds) until the first report >= target; None if never reached."""
    for count, (seconds, _, _, auroc) in enumerate(log.reports, start=1):
        if math.isfinite(auroc) and auroc >= target:
            return count, seconds
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("AITEXVAE_HOME", os.path.join(tempfile.gettempdir(), "aitexvae-bench"))
    with tempfile.TemporaryDirectory(prefix="asha-vs-fifo-") as storage:
        fifo, fifo_wall = run(args, "fifo", storage)
        asha, asha_wall = run(args, "asha", storage)
    best = max(a for *_, a in fifo.reports if math.isfinite(a))
    target = best - TOLERANCE
    rows = {}
    for name, log, wall in (("fifo", fifo, fifo_wall), ("asha", asha, asha_wall)):
        reached = to_target(log, target)
        best_here = max(a for *_, a in log.reports if math.isfinite(a))
        rows[name] = reached
        where = (f"reached at {reached[0]} trial-epochs, {reached[1]:.1f} s"
                 if reached else "never reached")
        print(f"{name}: {len(log.reports)} trial-epochs, {wall:.1f} s wall, best val/auroc "
              f"{best_here:.4f}; target {target:.4f} {where}", flush=True)
    if rows["asha"] is None:
        print("ASHA never reached the target (it stopped the trial that would have)")
        ratio = math.inf
    else:
        ratio = rows["asha"][0] / rows["fifo"][0]
        print(f"wall-time ratio to target: {rows['asha'][1] / rows['fifo'][1]:.3f}; total "
              f"compute ratio: {len(asha.reports) / len(fifo.reports):.3f}")
    print(f"ratio asha_vs_fifo_compute: {ratio:.3f}")


if __name__ == "__main__":
    main()
