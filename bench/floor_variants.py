"""Experiment for #10 (not a benchmark of the service, not a test): can a cheaper change than a
better reconstruction lift the training-free floor on real AITEX?

Three families of variants on the floor's blur "reconstruction" (sigma 12), each scored on the
test split of the AITEX dev set as ``bench/real_quality.py`` splits it:

- the floor's own scorers: the smoothed squared residual and the smoothed signed residual (max);
- score normalisation by context: each patch against the other patches of its own strip
  (median/MAD), and against the *training* patches of its fabric (median/MAD; the fabric is
  known on a line) — if texture noise differs between strips or fabrics, pooling across them
  is what hurts the AUROC, and this would fix it;
- directional residual means: the signed residual averaged over w pixels along rows or
  columns before the max, since warp and weft defects run along the image axes while the weave
  averages out along them.

Prints one line per variant (fabric-matched and DRA-protocol AUROC), then how the signed floor
ranks anomalous patches by their defect's size (the share of same-strip clean patches scored
below each), and ends with
``ratio fabric-matched-auroc-best-vs-floor: X`` (the best variant ÷ the signed floor).

    .venv/bin/python bench/floor_variants.py --data-root ../shared/data/aitex-dev
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.real_quality import FLOOR_SIGMA, dra_auroc  # noqa: E402
from vae.data import DataConfig, load_catalog  # noqa: E402
from vae.data.splits import assign_strips  # noqa: E402
from vae.score.blur import gaussian_blur  # noqa: E402
from vae.score.metrics import evaluate_scores  # noqa: E402

WINDOWS = (4, 8, 16, 32)


def residuals(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images[:, 0].astype(np.float32) / 255.0)
    return x - gaussian_blur(x, FLOOR_SIGMA)


def variants(r: torch.Tensor) -> dict[str, np.ndarray]:
    """Patch scores of every residual-based variant (max of a map)."""
    out = {"l2_smooth": gaussian_blur(r.square(), 2.0),
           "signed_smooth": gaussian_blur(r, 2.0).abs()}
    for w in WINDOWS:
        rows = F.avg_pool2d(r[:, None], (1, w), stride=1)[:, 0]
        cols = F.avg_pool2d(r[:, None], (w, 1), stride=1)[:, 0]
        out[f"row_mean{w}"] = gaussian_blur(rows, 1.0).abs()
        out[f"col_mean{w}"] = gaussian_blur(cols, 1.0).abs()
    return {name: maps.flatten(1).amax(1).numpy() for name, maps in out.items()}


def robust_z(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    median = np.median(reference)
    return (scores - median) / (np.median(np.abs(reference - median)) + 1e-9)


def normalised(scores: np.ndarray, groups: np.ndarray,
               reference: Callable[[str], np.ndarray]) -> np.ndarray:
    out = np.empty_like(scores)
    for group in np.unique(groups):
        where = groups == group
        out[where] = robust_z(scores[where], reference(group))
    return out


def by_defect_size(scores: np.ndarray, test) -> None:
    """How far each anomalous patch ranks above the clean patches of the defective strips."""
    anomalous = test.labels.astype(bool)
    clean = ~anomalous & np.isin(test.strip, np.unique(test.strip[anomalous]))
    above = (scores[clean][None, :] < scores[anomalous][:, None]).mean(1)
    pixels = test.defect_pixels[anomalous]
    for low, high in ((0, 100), (100, 1000), (1000, None)):
        where = (pixels >= low) & (pixels < (high or np.inf))
        if where.any():
            print(f"  defect of {low}-{high or ''} mask pixels: {int(where.sum())} patches, "
                  f"mean share of clean patches below {above[where].mean():.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/aitex-dev"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = DataConfig(format="aitex", root=args.data_root, patch_size=256, seed=args.seed)
    catalog, _ = load_catalog(config)
    roles = assign_strips(catalog, config)
    train, test = (catalog.subset(np.isin(catalog.strip_index, roles[role]))
                   for role in ("train", "test"))
    print(f"test split: {len(test.labels)} patches, {int(test.labels.sum())} anomalous, "
          f"{len(np.unique(test.strip))} strips")

    def row(name: str, scores: np.ndarray) -> float:
        matched = evaluate_scores(scores, test.labels, strips=test.strip)
        figure = matched["patch_auroc_fabric_matched"]
        print(f"{name:32s} fabric-matched {figure:.3f}  DRA "
              f"{dra_auroc(scores, test.labels, test.strip):.3f}")
        return figure

    tested, trained = variants(residuals(test.images)), variants(residuals(train.images))
    figures = {name: row(name, scores) for name, scores in tested.items()}
    for name in ("l2_smooth", "signed_smooth"):
        scores = tested[name]
        figures[f"{name} per strip"] = row(f"{name} per strip (median/MAD)", normalised(
            scores, test.strip, lambda strip, s=scores: s[test.strip == strip]))
        figures[f"{name} per fabric"] = row(f"{name} per fabric (train median/MAD)", normalised(
            scores, test.fabric, lambda fabric, n=name: trained[n][train.fabric == fabric]))
    print("signed_smooth by defect size:")
    by_defect_size(tested["signed_smooth"], test)
    best = max(figures, key=figures.__getitem__)
    print(f"best: {best} {figures[best]:.3f}; the signed floor {figures['signed_smooth']:.3f}")
    print(f"ratio fabric-matched-auroc-best-vs-floor: "
          f"{figures[best] / figures['signed_smooth']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
