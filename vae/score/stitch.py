"""Put patch maps back together into a strip-sized map (4096×256 for AITEX).

Where patches overlap (a stride smaller than the patch, or the last patch of a strip whose
width is not a multiple of the patch, shifted left to end at the edge) their values are
averaged, so an identity "model" gives the strip back exactly. Pixels no patch covers are NaN:
an unknown score, which the pixel metrics and overlays leave out instead of calling it normal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stitch(maps: np.ndarray, xs: Sequence[int] | np.ndarray, ys: Sequence[int] | np.ndarray,
           strip_shape: tuple[int, int], *, fill: float = np.nan) -> np.ndarray:
    """(N, P, P) patch maps with top-left offsets (xs[i], ys[i]) → (H, W) float32 strip map.

    ``strip_shape`` is (height, width). Overlaps are averaged; uncovered pixels get ``fill``.
    """
    maps = np.asarray(maps)
    xs, ys = np.asarray(xs, dtype=np.int64), np.asarray(ys, dtype=np.int64)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {maps.shape}")
    if not (len(xs) == len(ys) == maps.shape[0]):
        raise ValueError(f"need one x and one y per map: {maps.shape[0]} maps, {len(xs)} xs, "
                         f"{len(ys)} ys")
    height, width = (int(v) for v in strip_shape)
    patch_h, patch_w = maps.shape[1:]
    for x, y in zip(xs, ys, strict=True):
        if x < 0 or y < 0 or x + patch_w > width or y + patch_h > height:
            raise ValueError(f"a {patch_h}×{patch_w} patch at x={x}, y={y} lies outside the "
                             f"{height}×{width} strip; allowed: 0 <= x <= {width - patch_w}, "
                             f"0 <= y <= {height - patch_h}")
    total = np.zeros((height, width), dtype=np.float64)  # float64: sums of overlaps stay exact
    count = np.zeros((height, width), dtype=np.int32)
    for patch, x, y in zip(maps, xs, ys, strict=True):
        total[y:y + patch_h, x:x + patch_w] += patch
        count[y:y + patch_h, x:x + patch_w] += 1
    out = np.full((height, width), fill, dtype=np.float32)
    covered = count > 0
    out[covered] = (total[covered] / count[covered]).astype(np.float32)
    return out
