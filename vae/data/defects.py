"""Synthetic fabric defects blended into real defect-free patches, with exact masks.

Five kinds, after the defect classes of the AITEX database (Silvestre-Blanes et al., "A Public
Fabric Database for Defect Detection Methods and Results", Autex Research Journal 19(4), 2019):
``line_break`` (broken end / broken pick: a missing yarn along the warp or weft), ``hole``,
``stain`` (contamination: a darker blob that keeps the weave), ``thick_place`` and
``thin_place`` (a band of weft that is denser and darker, or sparser and lighter).

Each kind draws an opacity map ``alpha`` and a target image; the patch becomes
``(1 - alpha) * patch + alpha * target``. ``alpha`` is in [0.5, 1] inside the defect and exactly
0 outside, so the mask (``alpha > 0``) is exact: no pixel outside it changes, and every pixel
inside moves at least half of the contrast step (>= 20 gray levels unless clipped at 0/255; a
matched defect, below, moves its pixels by its real contrast, at least ``MIN_STEP`` on average).
Sizes scale with the patch, so defects stay visible on 64-pixel patches and small on 256.

Those built-in sizes and contrasts are far larger and stronger than most real AITEX defects
(median ~0.15 % of a 256² patch, often a few gray levels). With ``statistics`` (measured on the
real validation strips' masks by ``measure``), each defect is cut down to a real defect's area
(the pixels of its shape nearest a random point of it, so a line stays a piece of line) and its
contrast set to that real defect's (mean |change| in units of the patch's std), so synthetic
validation defects are as hard to see as real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_STEP = 3.0  # gray levels: the faintest matched defect (see _match)
KINDS = ("line_break", "hole", "stain", "thick_place", "thin_place")


def _step(gray: np.ndarray, rng: np.random.Generator, low: float = 40.0) -> float:
    """A contrast step that stands out of the texture: >= ``low`` levels, >= 2 std."""
    return max(low, 2.0 * float(gray.std())) * rng.uniform(1.0, 1.5)


def _line_break(gray, rng, yy, xx):
    size = gray.shape[0]
    width = int(rng.integers(1, max(2, size // 64) + 1))
    length = int(rng.uniform(0.3, 1.0) * size)
    start, offset = int(rng.integers(0, size - length + 1)), int(rng.integers(0, size - width + 1))
    along, across = (xx, yy) if rng.random() < 0.5 else (yy, xx)
    inside = (along >= start) & (along < start + length) & (across >= offset) \
        & (across < offset + width)
    sign = -1.0 if rng.random() < 0.5 else 1.0
    return inside.astype(np.float32), np.full_like(gray, gray.mean() + sign * _step(gray, rng))


def _hole(gray, rng, yy, xx):
    size = gray.shape[0]
    ry, rx = np.maximum(1.5, rng.uniform(0.02, 0.07, 2) * size)
    cy, cx = rng.uniform(0.15, 0.85, 2) * size
    d2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    alpha = np.where(d2 <= 1.0, 1.0 - 0.5 * d2, 0.0)  # soft rim, hard cut at the edge
    sign = -1.0 if rng.random() < 0.7 else 1.0  # holes mostly look dark in reflected light
    return alpha, np.full_like(gray, gray.mean() + sign * 1.5 * _step(gray, rng))


def _stain(gray, rng, yy, xx):
    size = gray.shape[0]
    radius = rng.uniform(0.05, 0.14) * size
    cy, cx = rng.uniform(0.2, 0.8, 2) * size
    field = np.zeros_like(gray)
    for _ in range(int(rng.integers(2, 5))):  # a few overlapping blobs: an irregular outline
        oy, ox = rng.normal(0.0, 0.5 * radius, 2)
        sigma = radius * rng.uniform(0.4, 0.8)
        field += np.exp(-((yy - cy - oy) ** 2 + (xx - cx - ox) ** 2) / (2 * sigma**2))
    level = 0.5 * field.max()
    alpha = np.where(field > level, 0.5 + 0.4 * (field - level) / (field.max() - level + 1e-6),
                     0.0)
    return alpha, gray - _step(gray, rng)  # darker, weave still visible


def _band(gray, rng, yy, xx, sign):
    size = gray.shape[0]
    height = int(rng.integers(2, max(3, size // 24) + 1))
    length = int(rng.uniform(0.4, 1.0) * size)
    top, left = int(rng.integers(0, size - height + 1)), int(rng.integers(0, size - length + 1))
    inside = (yy >= top) & (yy < top + height) & (xx >= left) & (xx < left + length)
    texture = 0.3 * (gray - gray.mean())  # denser/sparser yarn: weaker texture, shifted level
    return inside.astype(np.float32), gray.mean() + sign * _step(gray, rng) + texture


def _thick_place(gray, rng, yy, xx):
    return _band(gray, rng, yy, xx, -1.0)


def _thin_place(gray, rng, yy, xx):
    return _band(gray, rng, yy, xx, 1.0)


GENERATORS = {"line_break": _line_break, "hole": _hole, "stain": _stain,
              "thick_place": _thick_place, "thin_place": _thin_place}


def defect(gray: np.ndarray, rng: np.random.Generator, kind: str | None = None
           ) -> tuple[np.ndarray, np.ndarray, str]:
    """``(alpha (H, W) float32, target (H, W) float32, kind)`` for one defect on ``gray``."""
    if kind is None:
        kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind not in GENERATORS:
        raise ValueError(f"unknown defect kind {kind!r}; choose one of {list(KINDS)}")
    gray = gray.astype(np.float32)
    yy, xx = np.mgrid[0:gray.shape[0], 0:gray.shape[1]].astype(np.float32)
    alpha, target = GENERATORS[kind](gray, rng, yy, xx)
    return alpha.astype(np.float32), target.astype(np.float32), kind


@dataclass(frozen=True)
class DefectStatistics:
    """Per real anomalous patch: defect pixels and contrast (|mean step| / std of clean pixels)."""

    areas: np.ndarray  # int (K,)
    contrasts: np.ndarray  # float (K,)

    def describe(self) -> str:
        return (f"{len(self.areas)} real defects: median area {np.median(self.areas):.0f} px, "
                f"median contrast {np.median(self.contrasts):.2f} std")


def measure(images: np.ndarray, masks: np.ndarray) -> DefectStatistics | None:
    """Statistics of the real defects in uint8 ``images`` (N, C, P, P) with masks (N, P, P)."""
    areas, contrasts = [], []
    for patch, mask in zip(images, masks, strict=True):
        area = int(mask.sum())
        if area == 0 or area == mask.size:
            continue
        gray = patch.astype(np.float32).mean(0)
        clean = gray[~mask]
        # mean |change| per defect pixel, as _match sets it (a mean of signed differences would
        # call a defect with dark and light parts invisible)
        change = float(np.abs(gray[mask] - clean.mean()).mean())
        contrasts.append(change / max(float(clean.std()), 1.0))
        areas.append(area)
    if not areas:
        return None
    return DefectStatistics(np.asarray(areas), np.asarray(contrasts, np.float32))


def _match(alpha: np.ndarray, delta: np.ndarray, gray: np.ndarray, rng: np.random.Generator,
           statistics: DefectStatistics) -> tuple[np.ndarray, np.ndarray]:
    """Shrink ``alpha`` to a real defect's area and scale ``delta`` to its contrast."""
    pick = int(rng.integers(len(statistics.areas)))
    area, contrast = int(statistics.areas[pick]), float(statistics.contrasts[pick])
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) > area:
        seed = int(rng.integers(len(ys)))
        nearest = np.argsort((ys - ys[seed]) ** 2 + (xs - xs[seed]) ** 2, kind="stable")[:area]
        keep = np.zeros_like(alpha, dtype=bool)
        keep[ys[nearest], xs[nearest]] = True
        alpha = np.where(keep, alpha, 0.0).astype(np.float32)
    inside = alpha > 0
    change = float(np.abs(alpha * delta)[inside].mean()) if inside.any() else 0.0
    # at least MIN_STEP gray levels: a labelled defect must change its pixels after rounding
    wanted = max(contrast * max(float(gray.std()), 1.0), MIN_STEP)
    return alpha, delta * (wanted / change if change > 0 else 1.0)


def inject(images: np.ndarray, seed: int, defects_per_patch: int = 1,
           statistics: DefectStatistics | None = None
           ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Copies of uint8 ``images`` (N, C, P, P) with defects: ``(images, masks (N, P, P), kinds)``.

    Deterministic: patch ``i`` always gets the same defects for the same ``seed`` (and
    ``statistics``; without them, exactly the built-in defects).
    """
    out = np.empty_like(images)
    masks = np.zeros((images.shape[0],) + images.shape[2:], dtype=bool)
    kinds = []
    for i, patch in enumerate(images):
        rng = np.random.default_rng([seed, i])
        work = patch.astype(np.float32)  # (C, P, P)
        names = []
        for _ in range(defects_per_patch):
            gray = work.mean(0)
            alpha, target, kind = defect(gray, rng)
            delta = target - gray  # the same shift on every channel keeps the hue
            if statistics is not None:
                alpha, delta = _match(alpha, delta, gray, rng, statistics)
            work = work + alpha * delta
            masks[i] |= alpha > 0
            names.append(kind)
        out[i] = np.clip(np.rint(work), 0, 255).astype(np.uint8)
        kinds.append("+".join(names))
    return out, masks, kinds
