"""Experiment for #10 (not a benchmark of the service, not a test): score each patch against
the other patches of its own strip.

On the AITEX dev split, clean patches of defective strips do not look like the defect-free
strips (a kNN memory bank of defect-free training texture reaches DRA 0.94 but only 0.69
fabric-matched: it flags the defective strips' normal weave too). A strip, though, is one woven
piece under one illumination, and a defect covers a small part of it. So the reference here is
the strip itself: every 16×16 window of a patch's residual (x − x̂, stride 8) is matched to its
nearest window among the strip's other patches (stride 4, PCA to 32 dimensions fitted on
training residuals); the patch score is the max of the 3×3-averaged distance map, or, with
``--reduction peak``, the max of the unsmoothed map above the patch's own median distance, and
with ``--reduction peak_fabric`` (what ``score.reference=strip_peak`` does) that over the windows
more than one window from the background found from each patch's border, and with
``--reduction peak_strip_fabric`` (``score.reference=strip_fabric``) from the background found
along the whole strip (``vae.score.reference.off_fabric``). Nothing is
trained for the blur reconstruction; ``--reconstruction vae`` trains one model first (the
``bench/quality_ablation.py`` recipe) and uses its residual.

Prints the plain scorer (signed_smooth/max) beside the self-referenced one on the same residual,
fabric-matched and DRA-protocol AUROC and the per-fabric figures, and ends with
``ratio fabric-matched-auroc: X`` (the self-referenced figure).

    .venv/bin/python bench/self_reference_probe.py                       # blur, ~3 min
    .venv/bin/python bench/self_reference_probe.py --reconstruction vae --crops 64 --epochs 6
    .venv/bin/python bench/self_reference_probe.py --window 8 --gap 1     # the README's variants
    .venv/bin/python bench/self_reference_probe.py --basis strip --reduction peak_strip_fabric
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.quality_ablation import _value, train_model  # noqa: E402
from bench.real_quality import FLOOR_SIGMA, dra_auroc  # noqa: E402
from vae.data import DataConfig, load_splits  # noqa: E402
from vae.score.blur import gaussian_blur  # noqa: E402
from vae.score.maps import iter_reconstructions  # noqa: E402
from vae.score.metrics import evaluate_scores  # noqa: E402
from vae.score.reference import clipped_columns, fabric_windows, off_fabric  # noqa: E402

QUERY_STRIDE, BANK_STRIDE = 8, 4


def blur_residuals(images: np.ndarray, high_pass: bool = True) -> torch.Tensor:
    x = torch.from_numpy(images[:, :1].astype(np.float32) / 255.0)
    return x - gaussian_blur(x[:, 0], FLOOR_SIGMA)[:, None] if high_pass else x


def model_residuals(model: torch.nn.Module, images: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([(x - recon).mean(1, keepdim=True)
                          for x, recon in iter_reconstructions(model, images)])


def windows(residuals: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """(N, 1, H, W) → (N, L, size²): every window at ``stride``."""
    return F.unfold(residuals, size, stride=stride).transpose(1, 2)


def fit_projection(residuals: torch.Tensor, size: int, dimensions: int, samples: int = 20000
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    flat = windows(residuals, size, QUERY_STRIDE).reshape(-1, size * size)
    flat = flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))[:samples]]
    mean = flat.mean(0)
    _, _, v = torch.pca_lowrank(flat - mean, q=dimensions, center=False)
    return mean, v[:, :dimensions]


def dct_basis(size: int, dimensions: int) -> torch.Tensor:
    """(size², dimensions): orthonormal 2-D DCT-II functions, lowest frequencies first."""
    n = torch.arange(size, dtype=torch.float64)
    one = torch.cos(torch.pi * (n[None, :] + 0.5) * n[:, None] / size)  # (freq, pos)
    one[0] /= 2 ** 0.5
    one *= (2 / size) ** 0.5
    pairs = sorted(((u, v) for u in range(size) for v in range(size)),
                   key=lambda p: (p[0] + p[1], p))[:dimensions]
    return torch.stack([torch.outer(one[u], one[v]).flatten() for u, v in pairs], 1).float()


def projection(basis: str, train_r: torch.Tensor, size: int, dimensions: int):
    """(mean, basis) of the window projection; ``train_r``: the residuals a PCA is fitted on."""
    if basis in ("train", "pooled"):
        return fit_projection(train_r, size, dimensions)
    if basis == "dct":
        return torch.zeros(size * size), dct_basis(size, dimensions)
    if basis == "none":
        return torch.zeros(size * size), torch.eye(size * size)
    return None  # "strip": fitted per strip in self_reference_scores


def self_reference_scores(residuals: torch.Tensor, strips: np.ndarray, xs: np.ndarray, *,
                          size: int, dimensions: int, gap: int,
                          projection: tuple[torch.Tensor, torch.Tensor] | None,
                          reduction: str = "smoothed", near: np.ndarray | None = None
                          ) -> np.ndarray:
    """``gap`` g leaves the g patches on either side (by x) out of a patch's reference;
    ``projection`` None fits each strip's PCA on that strip's own windows (no training state);
    ``reduction`` "smoothed": max of the 3×3 mean, "peak": unsmoothed max above the median,
    "peak_fabric" and "peak_strip_fabric": that over the windows touching none of the ``near``
    (N, W) bool columns (within a window of the background)."""
    scores = np.zeros(len(residuals), np.float32)
    for strip in np.unique(strips):
        members = np.flatnonzero(strips == strip)
        members = members[np.argsort(xs[members], kind="stable")]
        mean, basis = projection or fit_projection(residuals[members], size, dimensions)
        queries = (windows(residuals[members], size, QUERY_STRIDE) - mean) @ basis
        bank = (windows(residuals[members], size, BANK_STRIDE) - mean) @ basis
        for k, index in enumerate(members):
            others = torch.cat([bank[j] for j in range(len(members)) if abs(j - k) > gap])
            distance = torch.cdist(queries[k], others).amin(1)
            if reduction.endswith("fabric"):
                keep = fabric_windows(torch.from_numpy(near[index][None]),
                                      residuals.shape[-2], size)
                distance = distance[keep.flatten()]
            if reduction.startswith("peak"):
                scores[index] = float(distance.max() - torch.quantile(distance, 0.5)) \
                    if distance.numel() else 0.0
                continue
            side = int(round(distance.numel() ** 0.5))
            smoothed = F.avg_pool2d(distance.view(1, 1, side, side), 3, 1, 1)
            scores[index] = float(smoothed.max())
    return scores


def near_background(test, edge: str, margin: int) -> np.ndarray:
    """(N, W) bool: each test patch's columns beyond its fabric's edge and within ``margin``
    px of it (``off_fabric``)."""
    clipped = clipped_columns(torch.from_numpy(test.images).float() / 255).numpy()
    out = np.zeros_like(clipped)
    for strip in np.unique(test.strip):
        members = np.flatnonzero(test.strip == strip)
        out[members] = off_fabric(clipped[members], np.stack([test.x, test.y], 1)[members],
                                  edge=edge, margin=margin)
    return out


def report(name: str, scores: np.ndarray, test) -> float:
    metrics = evaluate_scores(scores, test.labels, strips=test.strip, fabrics=test.fabric)
    per_fabric = ", ".join(f"{fabric} {m['patch_auroc_fabric_matched']:.2f}"
                           for fabric, m in metrics["per_fabric"].items()
                           if np.isfinite(m.get("patch_auroc_fabric_matched", np.nan)))
    figure = metrics["patch_auroc_fabric_matched"]
    print(f"{name:34s} fabric-matched {figure:.3f}  DRA "
          f"{dra_auroc(scores, test.labels, test.strip):.3f}  (per fabric: {per_fabric})")
    return figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/aitex-dev"))
    parser.add_argument("--reconstruction", choices=("blur", "vae"), default="blur")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--crops", type=int, default=0)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--dimensions", type=int, default=32)
    parser.add_argument("--gap", type=int, default=0,
                        help="leave this many neighbouring patches out of the reference")
    parser.add_argument("--basis", choices=("train", "pooled", "strip", "dct", "none"), default="train",
                        help="window projection: PCA of training residuals, of all the scored "
                             "patches' residuals, of each strip's own windows, the "
                             "lowest-frequency 2-D DCT functions, or none")
    parser.add_argument("--reduction", default="smoothed",
                        choices=("smoothed", "peak", "peak_fabric", "peak_strip_fabric"),
                        help="patch score: max of the 3×3-averaged distances, the unsmoothed "
                             "max above the patch's median, or that away from the background "
                             "found from each patch's border (score.reference=strip_peak) or "
                             "along the strip (strip_fabric)")
    parser.add_argument("--raw", action="store_true",
                        help="blur: match raw pixels instead of the high-pass residual")
    args = parser.parse_args()
    splits = load_splits(DataConfig(format="aitex", root=args.data_root, patch_size=256))
    test = splits.test
    if args.reconstruction == "vae":
        overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
        model, _, seconds = train_model(splits, overrides, args.epochs, args.crops)
        print(f"trained {overrides or 'the defaults'} for {args.epochs} epochs in "
              f"{seconds / 60:.1f} min")
        train_r, test_r = (model_residuals(model, s.images) for s in (splits.train, test))
    else:
        train_r, test_r = (blur_residuals(s.images, not args.raw) for s in (splits.train, test))
    print(f"test split: {len(test.labels)} patches, {int(test.labels.sum())} anomalous, "
          f"{len(np.unique(test.strip))} strips")
    name = "raw pixels" if args.raw and args.reconstruction == "blur" else args.reconstruction
    if name != "raw pixels":  # the plain scorer on the same residual, side by side
        plain = gaussian_blur(test_r[:, 0], 2.0).abs().flatten(1).amax(1).numpy()
        report(f"{name} signed_smooth/max", plain, test)
    start = time.perf_counter()
    scores = self_reference_scores(
        test_r, test.strip, test.x, size=args.window, dimensions=args.dimensions, gap=args.gap,
        projection=projection(args.basis, test_r if args.basis == "pooled" else train_r,
                              args.window, args.dimensions), reduction=args.reduction,
        near=near_background(test, "strip" if args.reduction == "peak_strip_fabric" else "patch",
                             args.window))
    figure = report(f"{name} self-reference", scores, test)
    print(f"self-reference scoring: {time.perf_counter() - start:.0f} s "
          f"({len(test.labels) / (time.perf_counter() - start):.1f} patches/s)")
    print(f"ratio fabric-matched-auroc: {figure:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
