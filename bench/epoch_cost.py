"""What a trial epoch costs beyond its necessary work, and the bytes its checkpoints take.

Side by side in one process, on the same model, patches, threads and seeds, alternated round by
round (the ratio is the median of the per-round ratios, which cancels load that drifts on a
shared machine):

- **trial epoch**: the trainable's own code (``search.trainable``): ``train_epoch``, then
  ``validate`` (losses, every scorer's scores and the AUROCs), then ``vae.checkpoint.write``
  into a temporary folder, copied to a storage folder as Tune persists it, and Adam's state
  pruned from the checkpoint that left the resume window (``OptimizerStateWindow``);
- **necessary work**: one training pass (``train_epoch``) plus one plain forward pass
  (``model.reconstruct``, fp32) over the validation patches.

For the record it also times the validation as it was before #14 (the normal patches encoded
twice and decoded three times: a sampled-z loss pass, a posterior-mean pass for ``val/mse``, and
the scores' pass) and reports the bytes a trial-epoch writes, what the driver reads on each
improvement, and what a kept checkpoint retains, before (Adam's state everywhere) and now.

    .venv/bin/python bench/epoch_cost.py [--train-patches 256] [--val-patches 64] [--rounds 3]
    .venv/bin/python bench/epoch_cost.py --covariance full --latent-dim 128   # a large head

Ends with ``ratio epoch-overhead: X`` (goal <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ray import tune

from search.settings import SearchSettings
from search.trainable import OptimizerStateWindow, TrialData, validate
from vae import checkpoint
from vae.config import VAEConfig
from vae.data import load_splits
from vae.losses import vae_loss
from vae.model import build_model
from vae.pixels import to_model_input
from vae.score.maps import scoring_precision
from vae.score.scorers import candidates, score_candidates
from vae.train import make_optimizer, prepare_model, train_epoch

CPU = torch.device("cpu")


def trial_epoch(model, optimizer, data, train, val, config, epoch: int, storage: Path,
                window: OptimizerStateWindow) -> Path:
    """One epoch as ``search.trainable.train_vae`` runs it, Tune's persist done by a copy."""
    trained = train_epoch(model, optimizer, train, config, CPU, epoch=epoch)
    metrics, scores, real_scores, _ = validate(model, val, data.val_labels, config)
    with tempfile.TemporaryDirectory(prefix="epoch-cost-") as directory:
        checkpoint.write(directory, model, optimizer, epoch + 1, {**metrics, **trained}, scores,
                         real_scores)
        persisted = shutil.copytree(directory, storage / f"checkpoint_{epoch:06d}")
    window.persisted(tune.Checkpoint.from_directory(str(persisted)))
    return Path(persisted)


def necessary_work(model, optimizer, train, val, config, epoch: int) -> None:
    train_epoch(model, optimizer, train, config, CPU, epoch=epoch)
    model.eval()
    with torch.inference_mode(), scoring_precision(CPU):
        for start in range(0, len(val), 64):
            model.reconstruct(to_model_input(val[start:start + 64], config.model.input_range))


def validation_before(model, val, labels, config) -> None:
    """The pre-#14 validation: sampled-z losses and a mean-z MSE over the normal patches (two
    encodes, two decodes each), then the scores' pass (one of each again)."""
    normal = val[torch.as_tensor(labels == 0)]
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(normal), 64):
            x = to_model_input(normal[start:start + 64], config.model.input_range)
            vae_loss(model(x), x, config.loss)
            model.reconstruct(x)
    score_candidates(model, val, candidates(config.score, reference=False))


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def folder_bytes(folder: Path, names: tuple[str, ...] | None = None) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.is_file() and (names is None or p.name in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--train-patches", type=int, default=0, help="0: all (1344 at 256²)")
    parser.add_argument("--val-patches", type=int, default=0,
                        help="0: all (672 at 256², half with defects)")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--covariance", default="diagonal")
    parser.add_argument("--select", default="fixed", help="score.select: fixed or best")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("AITEXVAE_HOME", os.path.join(tempfile.gettempdir(), "aitexvae-bench"))
    torch.set_num_threads(args.threads)

    settings = SearchSettings(image_size=args.image_size)
    splits = load_splits(settings.data_config())
    data = TrialData.from_splits(splits, args.train_patches)
    if args.val_patches:
        rng, labels = np.random.default_rng(0), data.val_labels
        half = args.val_patches // 2
        keep = np.sort(np.r_[rng.permutation(np.flatnonzero(labels == 0))[:half],
                             rng.permutation(np.flatnonzero(labels == 1))[:half]])
        data = TrialData(data.train_images, data.val_images[keep], labels[keep])
    train, val, _ = data.tensors()
    config = VAEConfig().with_overrides({
        **settings.base_config(), "model.latent_dim": args.latent_dim,
        "model.covariance": args.covariance, "score.select": args.select})
    torch.manual_seed(0)
    model = prepare_model(build_model(config), CPU)
    optimizer = make_optimizer(model, config.train)
    print(f"{len(train)} training + {len(val)} validation patches ({int((data.val_labels == 1).sum())}"
          f" with defects) at {args.image_size}x{args.image_size}, latent {args.latent_dim} "
          f"{args.covariance}, score.select={args.select}, {args.threads} threads", flush=True)

    ratios, before, after = [], [], []
    keep = 2  # --keep-checkpoints default: Adam's state stays in the last keep + 1
    with tempfile.TemporaryDirectory(prefix="epoch-cost-storage-") as storage:
        storage, window = Path(storage), OptimizerStateWindow(keep + 1)
        for round_index in range(args.rounds):
            epoch = 2 * round_index
            start = time.perf_counter()
            latest = trial_epoch(model, optimizer, data, train, val, config, epoch, storage,
                                 window)
            trial_s = time.perf_counter() - start
            base_s = timed(necessary_work, model, optimizer, train, val, config, epoch + 1)
            before.append(timed(validation_before, model, val, data.val_labels, config))
            after.append(timed(validate, model, val, data.val_labels, config))
            ratios.append(trial_s / base_s)
            print(f"round {round_index + 1}: trial epoch {trial_s:.2f} s, necessary work "
                  f"{base_s:.2f} s, ratio {ratios[-1]:.3f}; validation before #14 "
                  f"{before[-1]:.2f} s, now {after[-1]:.2f} s", flush=True)
        full = folder_bytes(latest)
        pulled = folder_bytes(latest, checkpoint.PULL_FILES)
        optimizer_bytes = (latest / checkpoint.OPTIMIZER_FILE).stat().st_size
        print(f"bytes per trial-epoch written to storage: {full / 1e6:.1f} MB before and now "
              f"(every checkpoint is the trial's latest when written; {optimizer_bytes / 1e6:.1f}"
              f" MB of it Adam's state)")
        print(f"bytes the driver reads per improvement: before {full / 1e6:.1f} MB (the whole "
              f"checkpoint, on Tune's event loop), now {pulled / 1e6:.1f} MB (PULL_FILES, on "
              f"the tracker's writer thread)")
        print(f"bytes a kept checkpoint retains once {keep + 1} newer ones exist: before "
              f"{full / 1e6:.1f} MB, now {(full - optimizer_bytes) / 1e6:.1f} MB; a trial "
              f"retains at most {keep + 1} checkpoints ({(keep + 1) * full / 1e6:.1f} MB before,"
              f" between {(full + keep * (full - optimizer_bytes)) / 1e6:.1f} and "
              f"{(keep + 1) * full / 1e6:.1f} MB now, by how old its best epochs are)")
    print(f"validation: before #14 {statistics.median(before):.2f} s, now "
          f"{statistics.median(after):.2f} s (median), ratio {statistics.median(after) / statistics.median(before):.3f}")
    print(f"ratio epoch-overhead: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
