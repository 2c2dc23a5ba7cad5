"""The probe picture: a fixed set of validation patches seen through one trial's best model.

Rows: input / reconstruction / residual map / spectrum gap; columns: the same normal and
synthetic-defect patches for every trial (chosen once per search by seed), so MLflow's compare
view shows like with like. The residual row is ``vae.score``'s anomaly map (the one the trial
was ranked by), on one colour scale for all columns so a normal patch looks calm next to a
defect. The spectrum row is |log(1+|F x|) - log(1+|F x̂|)|, centred: the spatial frequencies
(weave periodicities) the reconstruction misses — what the FFT loss term targets.
Drawn with Pillow: no matplotlib state, safe in the tracker's writer thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from vae.pixels import to_model_input, to_unit
from vae.score import anomaly_maps

ROWS = ("input", "reconstruction", "residual", "spectrum gap")
MIN_CELL = 96  # pixels; small patches are enlarged (nearest) so the picture stays readable
GAP = 2  # white pixels between tiles
LABEL_WIDTH = 110
HEADER_HEIGHT = 18


@dataclass(frozen=True)
class ProbeSet:
    """uint8 ``images (K, C, P, P)``, their ``labels (K,)`` (0 normal, 1 defect) and indices."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray  # positions in the validation split, for the picture's column titles


def choose_probe(images: np.ndarray, labels: np.ndarray, per_class: int = 4, seed: int = 0
                 ) -> ProbeSet:
    """``per_class`` normal and ``per_class`` defect patches of the validation split, by seed."""
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"probe candidates must be uint8 (N, C, P, P) with N labels; got "
                         f"{images.dtype} {images.shape} and {labels.shape[0]} labels")
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in (0, 1):
        pool = np.flatnonzero(labels == label)
        take = min(per_class, pool.size)
        chosen.append(np.sort(rng.choice(pool, size=take, replace=False)) if take else pool)
    indices = np.concatenate(chosen).astype(np.int64)
    if indices.size == 0:
        raise ValueError("the validation split has no patches to probe")
    return ProbeSet(images=np.ascontiguousarray(images[indices]), labels=labels[indices].copy(),
                    indices=indices)


def _hot(values: np.ndarray) -> np.ndarray:
    """[0, 1] → RGB uint8 with a black-red-yellow-white ramp (readable for small residuals)."""
    t = np.clip(values, 0.0, 1.0)[..., None] * 3.0
    rgb = np.clip(np.concatenate([t, t - 1.0, t - 2.0], axis=-1), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)


def _gray(unit: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) uint8 (gray shown as gray, RGB as itself)."""
    image = np.clip(unit, 0.0, 1.0)
    image = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    return (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def _spectrum_gap(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """(C, H, W) pair → (H, W) centred log-magnitude difference, channel mean."""
    def log_mag(a: np.ndarray) -> np.ndarray:
        return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(a), axes=(-2, -1)))).mean(axis=0)

    return np.abs(log_mag(x) - log_mag(recon))


def probe_rows(model: torch.nn.Module, probe: ProbeSet) -> dict[str, np.ndarray]:
    """The four rows as float arrays: input/reconstruction (K, C, H, W) in [0, 1], residual
    and spectrum gap (K, H, W)."""
    input_range = model.config.model.input_range
    maps = anomaly_maps(model, probe.images)
    model.eval()
    with torch.inference_mode():
        x = to_model_input(probe.images, input_range)
        recon = to_unit(model.reconstruct(x).float(), input_range).cpu().numpy()
    x_unit = to_unit(x, input_range).numpy()
    spectrum = np.stack([_spectrum_gap(a, b) for a, b in zip(x_unit, recon, strict=True)])
    return {"input": x_unit, "reconstruction": recon, "residual": maps, "spectrum gap": spectrum}


def render_probe(model: torch.nn.Module, probe: ProbeSet, title: str = "") -> Image.Image:
    """The probe picture as an RGB image (see module docstring for its layout)."""
    rows = probe_rows(model, probe)
    k, size = probe.images.shape[0], probe.images.shape[-1]
    tile_size = max(size, MIN_CELL)
    cell = tile_size + GAP
    residual_scale = max(float(rows["residual"].max()), 1e-12)
    spectrum_scale = max(float(rows["spectrum gap"].max()), 1e-12)
    canvas = Image.new("RGB", (LABEL_WIDTH + k * cell, 2 * HEADER_HEIGHT + len(ROWS) * cell),
                       "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black")
    for column in range(k):
        kind = "defect" if probe.labels[column] else "normal"
        draw.text((LABEL_WIDTH + column * cell + 4, HEADER_HEIGHT + 2),
                  f"{kind} #{probe.indices[column]}", fill="black")
    for row, name in enumerate(ROWS):
        top = 2 * HEADER_HEIGHT + row * cell
        note = {"residual": f"max {residual_scale:.3g}", "spectrum gap": "log |F| diff"}.get(name)
        draw.text((4, top + cell // 2 - 8), name, fill="black")
        if note:
            draw.text((4, top + cell // 2 + 6), note, fill="gray")
        for column in range(k):
            if name in ("input", "reconstruction"):
                tile = _gray(rows[name][column])
            elif name == "residual":
                tile = _hot(rows[name][column] / residual_scale)
            else:
                tile = _hot(rows[name][column] / spectrum_scale)
            picture = Image.fromarray(tile).resize((tile_size, tile_size), Image.NEAREST)
            canvas.paste(picture, (LABEL_WIDTH + column * cell, top))
    return canvas
