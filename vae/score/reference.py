"""The strip as its own reference: each patch's residual compared with the rest of its strip.

On real AITEX the clean patches of a defective strip often do not look like the defect-free
strips (another roll, another tension, another light), so a residual large for a whole strip is
not a defect. A strip, though, is one woven piece under one illumination, and a defect covers a
small part of it. So every ``window``² window of a patch's signed residual (x − x̂, channel
mean) is matched to its nearest window among the *other* patches of the same strip, and the
distance is the anomaly map: texture that recurs elsewhere on the strip scores low, texture
found nowhere else scores high. This is the nearest-neighbour idea of PatchCore (Roth et al.
2022), with the memory bank taken from the strip being inspected instead of from training data.

Windows are compared in a PCA basis fitted on the strip's own query windows (``dimensions``
components, exact eigendecomposition, so the result is deterministic and needs no training
state). Measured on the AITEX dev split's test strips, through ``aitexvae score`` on one
champion (``bench/real_quality.py``): fabric-matched AUROC 0.722 → 0.832, DRA 0.811 → 0.915.
A basis fitted on training residuals did better on a blur residual in
``bench/self_reference_probe.py`` (0.859 against 0.826 for the strip's own), within about one
standard error of 55 anomalous patches; it would have to travel with the model.

A defect that repeats along the whole strip (a missed yarn running its length) recurs in the
reference and is not found this way: that is the price of a reference without training data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vae.score.maps import iter_reconstructions

REFERENCES = ("none", "strip")  # "none": the model's own scorer, patch by patch
QUERY_STRIDE, BANK_STRIDE = 8, 4  # px: the bank is denser so a shifted repeat still matches
WINDOW, DIMENSIONS = 16, 32
MIN_PATCHES = 2  # a patch needs at least one other patch of its strip to be compared with
# What scored the patches, as summary.json records it in place of the model's score section.
REFERENCE_SCORER = {"reference": "strip", "window": WINDOW, "dimensions": DIMENSIONS,
                    "query_stride": QUERY_STRIDE, "bank_stride": BANK_STRIDE, "reduction": "max"}


def signed_residuals(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, *,
                     batch_size: int = 64, device: torch.device | str | None = None
                     ) -> torch.Tensor:
    """(N, H, W) float32 x − x̂ in [0, 1] units, averaged over channels, on the scoring device."""
    parts = [(x - recon).mean(1).float()
             for x, recon in iter_reconstructions(model, images_uint8, batch_size=batch_size,
                                                  device=device)]
    return torch.cat(parts)


def _windows(residuals: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """(N, H, W) → (N, L, size²): every window at ``stride``."""
    return F.unfold(residuals[:, None], size, stride=stride).transpose(1, 2)


def _disjoint(corners: np.ndarray | None, count: int, height: int, width: int) -> np.ndarray:
    """(N, N) bool: patch j shares no pixel with patch k (and is not k)."""
    if corners is None:
        return ~np.eye(count, dtype=bool)
    corners = np.asarray(corners)
    if corners.shape != (count, 2):
        raise ValueError(f"corners must have shape ({count}, 2), got {corners.shape}")
    dx = np.abs(corners[:, None, 0] - corners[None, :, 0])
    dy = np.abs(corners[:, None, 1] - corners[None, :, 1])
    return (dx >= width) | (dy >= height)


def lonely_patch(corners: np.ndarray, height: int, width: int) -> tuple[int, int] | None:
    """The (x, y) of the first patch with no other patch that shares no pixel with it (then the
    strip cannot be its own reference), else None."""
    corners = np.asarray(corners).reshape(-1, 2)
    alone = ~_disjoint(corners, len(corners), height, width).any(1)
    return (int(corners[alone][0, 0]), int(corners[alone][0, 1])) if alone.any() else None


def _basis(queries: torch.Tensor, dimensions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and top ``dimensions`` principal axes of (M, D) windows (exact, deterministic)."""
    flat = queries.reshape(-1, queries.shape[-1]).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return mean.float(), vectors[:, -dimensions:].flip(1).float()


def strip_reference(residuals: torch.Tensor | np.ndarray, corners: np.ndarray | None = None,
                    *, window: int = WINDOW, dimensions: int = DIMENSIONS
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) signed residuals of one strip's N patches → ((N, H, W) maps, (N,) scores).

    A query window every 8 px is matched to its nearest bank window (every 4 px, so a shifted
    repeat still matches) in the strip's other patches; the distances, smoothed over 3×3
    neighbouring windows, are the patch's score (their max) and, spread back over each
    window's pixels (the mean of the windows covering a pixel), its map, which stitches like
    any other. ``corners`` (N, 2) (x, y): where the patches lie in the strip; a patch that
    shares pixels with the scored one (a stride below the patch size) is left out of its
    reference, or its own defect would be found there. None: the patches do not overlap.
    Runs on the residuals' device.
    """
    residuals = torch.as_tensor(residuals, dtype=torch.float32)
    if residuals.ndim != 3:
        raise ValueError(f"residuals must have shape (N, H, W), got {tuple(residuals.shape)}")
    count, height, width = residuals.shape
    if count < MIN_PATCHES:
        raise ValueError(f"a strip reference needs at least {MIN_PATCHES} patches of one strip, "
                         f"got {count}")
    if not 1 <= dimensions <= window * window or window > min(height, width):
        raise ValueError(f"window={window}, dimensions={dimensions} are invalid for "
                         f"{height}×{width} patches; allowed: window ≤ {min(height, width)}, "
                         f"1 ≤ dimensions ≤ window²")
    disjoint = torch.from_numpy(_disjoint(corners, count, height, width)).to(residuals.device)
    lonely = None if corners is None else lonely_patch(corners, height, width)
    if lonely is not None:
        x, y = lonely
        raise ValueError(f"the patch at ({x}, {y}) overlaps every other patch of its strip, so "
                         f"nothing is left to compare it with; allowed: patches cut at a stride "
                         f"of at least the patch size ({width})")
    queries = _windows(residuals, window, QUERY_STRIDE)
    mean, basis = _basis(queries, dimensions)
    queries = (queries - mean) @ basis
    bank = (_windows(residuals, window, BANK_STRIDE) - mean) @ basis  # (N, Lb, d)
    rows = (height - window) // QUERY_STRIDE + 1
    cols = (width - window) // QUERY_STRIDE + 1
    cover = F.fold(torch.ones(1, window * window, rows * cols, device=residuals.device),
                   (height, width), window, stride=QUERY_STRIDE)
    maps = torch.empty(count, height, width, device=residuals.device)
    scores = torch.empty(count, device=residuals.device)
    for k in range(count):
        distance = _nearest(queries[k], bank[disjoint[k]].reshape(-1, bank.shape[-1]))
        smoothed = F.avg_pool2d(distance.view(1, 1, rows, cols), 3, stride=1, padding=1)
        scores[k] = smoothed.amax()
        spread = F.fold(smoothed.reshape(1, 1, -1).expand(1, window * window, -1),
                        (height, width), window, stride=QUERY_STRIDE)
        maps[k] = (spread / cover.clamp_min(1))[0, 0]  # a pixel no window covers: 0
    return maps, scores


def _nearest(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(Q,) distance of each query to its nearest bank row; the bank in chunks, so memory stays
    at Q × chunk distances whatever the strip's length."""
    best = torch.full((len(queries),), torch.inf, device=queries.device)
    for start in range(0, len(bank), chunk):
        best = torch.minimum(best, torch.cdist(queries, bank[start:start + chunk]).amin(1))
    return best
