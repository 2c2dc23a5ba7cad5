"""One configuration trained directly (no Ray, no MLflow) on an AITEX-layout set, scored on its
test split with every built-in scorer: the single-training ablations behind the README's "What
moves detection on real fabric" table (not a test).

    .venv/bin/python bench/quality_ablation.py --set model.tile_size=64 --epochs 6
    .venv/bin/python bench/quality_ablation.py --set model.decoder=resize --epochs 3
    .venv/bin/python bench/quality_ablation.py --set model.tile_size=64 \\
        --set train.denoise_probability=0.5 --set train.flip=horizontal --epochs 5

``--crops T`` trains a T-pixel model on 16 random T×T crops per training patch each epoch and
scores 256-px patches tile by tile, as the same weights in a tiled model (how the README's
tile figures were measured); without
it the config's own ``model.tile_size`` tiling is used, exactly as a search trains.
Ends with ``ratio fabric-matched-auroc: X`` for the scorer that won on validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.real_quality import dra_auroc  # noqa: E402
from vae.config import VAEConfig  # noqa: E402
from vae.data import DataConfig, load_splits  # noqa: E402
from vae.model import build_model  # noqa: E402
from vae.score import image_auroc  # noqa: E402
from vae.score.metrics import evaluate_scores  # noqa: E402
from vae.score.scorers import candidates, pick_best, score_candidates  # noqa: E402
from vae.train import make_optimizer, prepare_model, train_epoch  # noqa: E402


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def as_tiled(model, patch_size: int):
    """The crop-trained model as a tiled model of whole patches: a ``tile_size=T`` model at
    ``patch_size`` has exactly the weights of an untiled ``T``-pixel one (vae.model)."""
    config = model.config.with_overrides({"model.image_size": patch_size,
                                          "model.tile_size": model.config.model.image_size})
    tiled = build_model(config)
    tiled.load_state_dict(model.state_dict())
    return tiled


def train_model(splits, overrides: dict, epochs: int, crops: int = 0):
    """One configuration trained on ``splits.train`` on the CPU, seed 0: (model, config,
    seconds). With ``crops`` T, each epoch trains on 16 random T×T crops per patch and the
    model is returned as the tiled whole-patch model of the same weights."""
    overrides = {"model.image_size": crops or 256, "loss.mse_weight": 1.0,
                 "loss.bce_weight": 0.0, "score.select": "best", **overrides}
    config = VAEConfig().with_overrides(overrides)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = prepare_model(build_model(config), device)
    optimizer = make_optimizer(model, config.train)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for epoch in range(epochs):
        images = splits.train.images
        if crops:
            t, n = crops, len(images)
            index = np.repeat(np.arange(n), 16)
            xs, ys = rng.integers(0, 257 - t, len(index)), rng.integers(0, 257 - t, len(index))
            images = np.stack([images[i, :, y:y + t, x:x + t]
                               for i, x, y in zip(index, xs, ys, strict=True)])
        metrics = train_epoch(model, optimizer, images, config, device, epoch=epoch)
        print(f"epoch {epoch + 1}: train/loss {metrics['train/loss']:.2f} "
              f"({metrics['train/epoch_time_s']:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    model.to(memory_format=torch.contiguous_format)
    if crops:
        model = as_tiled(model, splits.test.patch_size)
    return model, config, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/aitex-dev"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--crops", type=int, default=0)
    args = parser.parse_args()
    splits = load_splits(DataConfig(format="aitex", root=args.data_root, patch_size=256))
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    model, config, train_s = train_model(splits, overrides, args.epochs, args.crops)
    configs = candidates(config.score, reference=False)
    test = splits.test
    val = score_candidates(model, splits.val.images, configs)
    tested = score_candidates(model, test.images, configs)
    val_auroc = {name: image_auroc(values, splits.val.labels) for name, values in val.items()}
    print(f"\n{json.dumps(overrides)}; {args.epochs} epochs, {train_s / 60:.1f} min")
    print("scorer                      val/auroc  fabric-matched  DRA")
    for name in configs:
        metrics = evaluate_scores(tested[name], test.labels, strips=test.strip)
        print(f"  {name:26s} {val_auroc[name]:.3f}      {metrics['patch_auroc_fabric_matched']:.3f}"
              f"           {dra_auroc(tested[name], test.labels, test.strip):.3f}")
    best = pick_best(val_auroc)
    fm = evaluate_scores(tested[best], test.labels, strips=test.strip)
    print(f"validation picks {best}")
    print(f"ratio fabric-matched-auroc: {fm['patch_auroc_fabric_matched']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
