"""Cut a strip into square patches and label each from its pixel mask.

Coverage: patches start every ``stride`` pixels from the left/top edge; when the last one does
not end on the right (bottom) edge, one more patch aligned to that edge is added, overlapping
its neighbour. A 3796-wide AITEX strip with 256-pixel patches thus gives x = 0, 256, …, 3328
and 3540 (15 patches): every pixel is covered, no patch is padded, and stitched maps can
average the overlap. A patch is anomalous when its mask holds ``min_defect_pixels`` or more.
"""

from __future__ import annotations

import numpy as np


def positions(length: int, patch_size: int, stride: int) -> np.ndarray:
    """Start offsets covering ``[0, length)``; the last one is aligned to the far edge."""
    if length < patch_size:
        raise ValueError(f"length {length} is smaller than patch_size {patch_size}")
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] != length - patch_size:
        starts.append(length - patch_size)
    return np.asarray(starts, dtype=np.int32)


def cut(image: np.ndarray, mask: np.ndarray, patch_size: int, stride: int
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images (n, C, P, P), masks (n, P, P), x (n,), y (n,))`` in row-major order."""
    _, height, width = image.shape
    ys, xs = positions(height, patch_size, stride), positions(width, patch_size, stride)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    yy, xx = yy.ravel(), xx.ravel()
    window = np.arange(patch_size)
    rows = (yy[:, None] + window)[:, :, None]  # (n, P, 1)
    cols = (xx[:, None] + window)[:, None, :]  # (n, 1, P)
    patches = image[:, rows, cols].transpose(1, 0, 2, 3)  # (C, n, P, P) → (n, C, P, P)
    return np.ascontiguousarray(patches), mask[rows, cols], xx, yy


def labels_from_masks(defect_pixels: np.ndarray, min_defect_pixels: int) -> np.ndarray:
    return (defect_pixels >= min_defect_pixels).astype(np.int64)
