"""Overhead of the search service: N trials × E epochs through `search.launcher` (local Ray,
checkpoint every epoch, FIFO so every trial runs all E epochs) vs the same trainings back to back
in this one plain process (same configs, data, seeds, threads; validation each epoch; no Ray,
no checkpoints).

Both sides train one trial at a time with the same torch thread count (service: 1 concurrent
trial with ``--cpus-per-trial`` = ``--threads``), so the ratio is the service's own cost: Ray
start-up, worker processes, the object store, a checkpoint per epoch, result handling. One
thread by default: on a shared machine a 2-thread OpenMP loop slows down erratically whenever
another process takes a core, which would swamp what is measured. Rounds alternate
service/plain; the ratio is the median of the per-round ratios. Target <= 1.15 for a search of
a few minutes (the default: 10 trials x 12 epochs at 64x64, ~2 min per side here).

    .venv/bin/python bench/tune_overhead.py [--trials 10] [--epochs 12] [--threads 1] [--rounds 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from search import launcher
from search.settings import SearchSettings
from search.trainable import TrialData, validate
from vae.config import VAEConfig
from vae.model import build_model
from vae.train import make_optimizer, prepare_model, train_epoch


def run_service(args: argparse.Namespace, storage: str, name: str) -> tuple[float, list[dict]]:
    settings = SearchSettings(name=name, image_size=args.image_size, num_samples=args.trials,
                              max_epochs=args.epochs, scheduler="fifo", seed=args.seed,
                              cpus_per_trial=float(args.threads), max_concurrent_trials=1,
                              storage_path=storage, tracking=False, verbose=0)
    start = time.perf_counter()
    prepared = launcher.prepare(settings)
    ready = time.perf_counter()
    outcome = launcher.run(prepared)
    elapsed = time.perf_counter() - start
    configs = [r.config for r in outcome.results]
    assert outcome.results.num_errors == 0 and len(configs) == args.trials
    frames = [r.metrics_dataframe for r in outcome.results]
    in_trials = sum(float(f["time_this_iter_s"].sum()) for f in frames)
    training = sum(float(f["train/epoch_time_s"].sum()) for f in frames)
    print(f"service: {ready - start:.1f} s to start (data, Ray), {in_trials:.1f} s inside trials "
          f"({training:.1f} s of it in train_epoch; the rest validation, checkpoints, "
          f"reports), {elapsed - (ready - start) - in_trials:.1f} s between and around trials", flush=True)
    return elapsed, configs


def run_plain(args: argparse.Namespace, configs: list[dict], settings: SearchSettings) -> float:
    """The same trainings in this process: data load, build, train + validate every epoch."""
    from vae.data import load_splits

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    data = TrialData.from_splits(load_splits(settings.data_config()))
    train, val, _ = data.tensors()
    device = torch.device("cpu")
    training = 0.0
    for flat in configs:
        config = VAEConfig().with_overrides(flat)
        torch.manual_seed(config.train.seed)
        model = prepare_model(build_model(config), device)
        optimizer = make_optimizer(model, config.train)
        for epoch in range(config.train.num_epochs):
            trained = train_epoch(model, optimizer, train, config, device, epoch=epoch)
            training += trained["train/epoch_time_s"]
            metrics, *_ = validate(model, val, data.val_labels, config)
            assert np.isfinite(metrics["val/auroc"])
    elapsed = time.perf_counter() - start
    print(f"plain: {elapsed:.1f} s ({training:.1f} s of it in train_epoch)", flush=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("AITEXVAE_HOME", os.path.join(tempfile.gettempdir(), "aitexvae-bench"))
    ratios = []
    with tempfile.TemporaryDirectory(prefix="tune-overhead-") as storage:
        for round_index in range(args.rounds):
            service_s, configs = run_service(args, storage, f"overhead-{round_index}")
            settings = SearchSettings(image_size=args.image_size, max_epochs=args.epochs)
            plain_s = run_plain(args, configs, settings)
            ratios.append(service_s / plain_s)
            print(f"round {round_index + 1}: service {service_s:.1f} s, plain {plain_s:.1f} s "
                  f"({args.trials} trials x {args.epochs} epochs, {args.image_size}px, "
                  f"{args.threads} thread(s)), ratio {ratios[-1]:.3f}", flush=True)
    print(f"ratio tune_overhead: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
