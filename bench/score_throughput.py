"""Patches/s of ``vae.score.score_patches`` against a plain reconstruction loop, side by side.

Both run in this process on the same model, patches, batch size, device, layout (channels_last)
and precision (fp32: ``vae.score.maps.scoring_precision``, as every score is computed),
alternated round by round; the reported ratio is the median of the per-round ratios, which
cancels load that drifts between rounds on a shared machine. The plain
loop is what any inference costs — uint8 to the device, scale, ``model.reconstruct`` — so the
ratio is what scoring adds on top: residual, blur, reduction and copying maps to the host.

    .venv/bin/python bench/score_throughput.py                 # AitexVAE 256×256, CPU or CUDA
    .venv/bin/python bench/score_throughput.py --patches 2048  # more work per round on a GPU

Ends with ``ratio score_vs_forward: X`` (target >= 0.9).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from vae.config import ModelConfig, VAEConfig
from vae.model import build_model
from vae.pixels import to_model_input
from vae.score import score_patches
from vae.score.maps import scoring_precision
from vae.train import select_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(model, images: torch.Tensor, batch_size: int, device: torch.device) -> None:
    model.eval().to(memory_format=torch.channels_last)  # the layout scoring uses
    with torch.inference_mode(), scoring_precision(device):
        for start in range(0, len(images), batch_size):
            x = to_model_input(images[start:start + batch_size].to(device, non_blocking=True),
                               model.config.model.input_range)
            model.reconstruct(x.contiguous(memory_format=torch.channels_last))
    _sync(device)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    args = parser.parse_args()

    device = torch.device(args.device) if args.device else select_device()
    torch.manual_seed(0)
    model = build_model(VAEConfig(model=ModelConfig(image_size=args.image_size))).to(device)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (args.patches, 1, args.image_size,
                                                    args.image_size), dtype=np.uint8))
    if device.type == "cuda":
        images = images.pin_memory()
    print(f"device {device}, {args.patches} patches {args.image_size}x{args.image_size}, batch "
          f"{args.batch_size}, score config {model.config.score}, torch threads "
          f"{torch.get_num_threads()}")

    def forward() -> None:
        plain_loop(model, images, args.batch_size, device)

    def score() -> None:
        score_patches(model, images, batch_size=args.batch_size, device=device)
        _sync(device)

    def score_only() -> None:
        score_patches(model, images, batch_size=args.batch_size, device=device, keep_maps=False)
        _sync(device)

    runs = {"forward": forward, "score": score, "score_no_maps": score_only}
    for fn in runs.values():  # warm-up: allocator, cuDNN autotuning, thread pools
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_number in range(args.rounds):
        # Alternate the order each round so neither side always runs on a warmer machine.
        order = list(runs) if round_number % 2 == 0 else list(reversed(runs))
        for name in order:
            times[name].append(timed(runs[name]))
        print(f"round {round_number + 1}: " + ", ".join(
            f"{name} {args.patches / t[-1]:.1f}/s" for name, t in times.items()))
    for name, t in times.items():
        print(f"{name:>14}: {args.patches / statistics.median(t):10.1f} patches/s "
              f"(median of {args.rounds} rounds)")
    # Per-round ratios cancel load that drifts between rounds on a shared machine.
    ratios = [f / s for f, s in zip(times["forward"], times["score"], strict=True)]
    no_maps = [f / s for f, s in zip(times["forward"], times["score_no_maps"], strict=True)]
    print(f"per-round ratios score/forward: {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"ratio score_no_maps_vs_forward (median): {statistics.median(no_maps):.3f}")
    print(f"ratio score_vs_forward: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
