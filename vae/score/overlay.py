"""Heat-map overlays of stitched anomaly maps, for a person to look at.

One PNG per strip, stacked top to bottom: the image, the image with the anomaly map blended in
(colour map ``inferno``; transparent where the map is low), and — when the strip has a mask —
the ground-truth defect pixels in red over the image. All overlays of one run share one colour
scale ``[0, vmax]`` so that a clean strip looks cold next to a defective one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

COLORMAP = "inferno"
MASK_RGB = np.array([255, 0, 0], dtype=np.float32)


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) with C 1 or 3 → float32 (H, W, 3)."""
    hwc = image.transpose(1, 2, 0).astype(np.float32)
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc


def render_overlay(image: np.ndarray, amap: np.ndarray, vmax: float,
                   mask: np.ndarray | None = None) -> Image.Image:
    """Image (C, H, W) uint8 + map (H, W) → RGB picture of 2 (3 with a mask) panels."""
    base = _rgb(image)
    scale = float(vmax) if np.isfinite(vmax) and vmax > 0 else 1.0
    level = np.clip(np.nan_to_num(amap, nan=0.0) / scale, 0.0, 1.0)  # NaN: uncovered, no heat
    heat = matplotlib.colormaps[COLORMAP](level)[..., :3].astype(np.float32) * 255.0
    alpha = np.sqrt(level)[..., None] * 0.8  # √: faint responses still show, the image shows through
    panels = [base, base * (1.0 - alpha) + heat * alpha]
    if mask is not None:
        weight = np.asarray(mask, dtype=np.float32)[..., None] * 0.7
        panels.append(base * (1.0 - weight) + MASK_RGB * weight)
    picture = np.concatenate(panels, axis=0)
    return Image.fromarray(np.clip(np.rint(picture), 0, 255).astype(np.uint8))


def save_overlay(path: str | Path, image: np.ndarray, amap: np.ndarray, vmax: float,
                 mask: np.ndarray | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_overlay(image, amap, vmax, mask).save(path, format="PNG")
    return path
