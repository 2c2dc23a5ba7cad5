"""Procedural woven-fabric textures for the synthetic data set (vectorised NumPy).

A weave is a binary repeat matrix (1: the warp yarn, running down the strip, lies on top at
that crossing; 0: the weft yarn, running across, does). Yarns get jittered widths, per-yarn
shade and a rounded cross-section profile; on top come low-frequency illumination (gradient
along the strip, shading across it) and sensor noise. Seven fabrics differ in weave (plain,
twills, satin, basket, rib, herringbone), yarn period, brightness, contrast, regularity, noise
and illumination, like AITEX's seven fabric codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _twill(repeat: int, up: int, step: int = 1) -> np.ndarray:
    rows = [np.roll(np.r_[np.ones(up), np.zeros(repeat - up)], step * r) for r in range(repeat)]
    return np.array(rows, dtype=bool)


def _herringbone() -> np.ndarray:
    right = _twill(4, 2)
    return np.concatenate([right, right[:, ::-1]], axis=1)  # twill direction flips every 4 yarns


WEAVES = {
    "plain": np.array([[1, 0], [0, 1]], dtype=bool),
    "twill_2_1": _twill(3, 2),
    "twill_3_1": _twill(4, 3),
    "satin_5": _twill(5, 1, step=2),
    "basket_2_2": np.kron([[1, 0], [0, 1]], np.ones((2, 2))).astype(bool),
    "rib": np.array([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=bool),
    "herringbone": _herringbone(),
}


@dataclass(frozen=True)
class Fabric:
    code: str  # two-digit AITEX-style fabric code
    weave: str
    roll: str  # folder name under NODefect_images
    period: float  # pixels per yarn
    brightness: float  # mean gray level
    contrast: float  # amplitude of the weave pattern
    irregularity: float  # relative jitter of yarn widths
    shade: float  # relative jitter of per-yarn brightness
    noise: float  # sensor noise std (gray levels)
    illumination: float  # relative amplitude of low-frequency lighting


FABRICS = (
    Fabric("00", "plain", "2306881-210020u", 5.0, 150, 60, 0.06, 0.08, 6.0, 0.10),
    Fabric("01", "twill_2_1", "2306894-210033u", 6.0, 110, 50, 0.05, 0.10, 5.0, 0.12),
    Fabric("02", "satin_5", "2311517-195063u", 4.0, 185, 35, 0.04, 0.05, 4.0, 0.08),
    Fabric("03", "basket_2_2", "2311694-1930c7u", 7.0, 95, 70, 0.08, 0.12, 7.0, 0.15),
    Fabric("04", "twill_3_1", "2311694-2040n7u", 5.0, 130, 55, 0.05, 0.09, 5.0, 0.10),
    Fabric("05", "rib", "2311980-185026u", 6.0, 165, 45, 0.07, 0.06, 6.0, 0.12),
    Fabric("06", "herringbone", "2608691-202020u", 5.0, 120, 60, 0.05, 0.10, 5.0, 0.10),
)


def _yarns(length: int, period: float, irregularity: float, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel yarn index and position within the yarn (0..1) along one axis."""
    count = int(length / (0.6 * period)) + 3  # enough yarns even if all are narrow
    widths = period * np.clip(1 + irregularity * rng.standard_normal(count), 0.6, 1.4)
    edges = np.concatenate([[0.0], np.cumsum(widths)]) - rng.uniform(0, period)
    centres = np.arange(length) + 0.5
    index = np.searchsorted(edges, centres, side="right") - 1
    return index, (centres - edges[index]) / widths[index]


def render(fabric: Fabric, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (height, width) float32 image of ``fabric`` (not yet clipped to 0..255)."""
    weave = WEAVES[fabric.weave]
    warp_i, warp_u = _yarns(width, fabric.period, fabric.irregularity, rng)  # along x
    weft_j, weft_v = _yarns(height, fabric.period, fabric.irregularity, rng)  # along y
    warp_shade = (1 + fabric.shade * rng.standard_normal(warp_i.max() + 1)).astype(np.float32)
    weft_shade = (1 + fabric.shade * rng.standard_normal(weft_j.max() + 1)).astype(np.float32)
    on_top = weave[(weft_j % weave.shape[0])[:, None], (warp_i % weave.shape[1])[None, :]]
    # Rounded yarn cross-section across each yarn, slight bulge along its float; 1-D profiles
    # in float32, expanded to 2-D only by the final products.
    across_warp = np.sin(np.pi * warp_u).astype(np.float32)
    across_weft = np.sin(np.pi * weft_v).astype(np.float32)
    warp = (across_warp**0.7 * warp_shade[warp_i])[None, :] * (0.85 + 0.15 * across_weft)[:, None]
    weft = (across_weft**0.7 * weft_shade[weft_j])[:, None] * (0.85 + 0.15 * across_warp)[None, :]
    texture = np.where(on_top, warp, weft).astype(np.float32)
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    phase, slope, bow = rng.uniform(0, 2 * np.pi), rng.uniform(-1, 1), rng.uniform(-1, 1)
    lighting = 1 + fabric.illumination * (0.5 * slope * x + 0.3 * bow * y**2
                                          + 0.3 * np.sin(2.3 * x + phase))
    level = fabric.brightness * rng.uniform(0.96, 1.04)
    image = level * lighting + fabric.contrast * (texture - texture.mean())
    return image + fabric.noise * rng.standard_normal((height, width), dtype=np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
