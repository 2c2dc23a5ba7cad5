"""The probe picture: a fixed set of validation patches seen through one trial's best model.

Rows: input / reconstruction / residual map / spectrum gap; columns: the same normal and
synthetic-defect patches for every trial (chosen once per search by seed), so MLflow's compare
view shows like with like. The residual row is ``vae.score``'s anomaly map (the one the trial
was ranked by), on one colour scale for all columns so a normal patch looks calm next to a
defect; a colour bar beside it gives the scale. The spectrum row is |log(1+|F x|) - log(1+|F x̂|)|,
centred: the spatial frequencies (weave periodicities) the reconstruction misses — what the FFT
loss term targets. Above each column: the patch's anomaly score (``vae.score``, as ``aitexvae
score`` computes it) and, when the checkpoint is calibrated, accept or reject against the
threshold, marked right or wrong against the patch's label. The scores are the trial's own
(its checkpoint's ``val_scores.npy``), so a model that scores a patch against the rest of its
strip (``score.reference`` other than ``"none"``) is captioned by what it decided; its residual
row is the per-patch map of the same reconstruction.
Drawn with Pillow: no matplotlib state, safe in the tracker's writer thread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vae.pixels import to_model_input, to_unit
from vae.score import Calibration, anomaly_maps, patch_scores

ROWS = ("input", "reconstruction", "residual", "spectrum gap")
MIN_CELL = 160  # pixels; small patches are enlarged (nearest) so the picture stays readable
MAX_CELL = 256  # and large ones shrunk, so 8 columns stay on one screen
GAP = 4  # white pixels between tiles
LABEL_WIDTH = 150
TITLE_HEIGHT = 26
HEADER_HEIGHT = 64  # three caption lines per column: the patch, its score, the decision
BAR_WIDTH = 70  # the colour bars right of the heat-map rows
FONT_SIZE = 15
# Caption colours outside the heat-map ramp (r >= g >= b; g = 0 until r = 255): findable.
ACCEPT, REJECT, WRONG = (0, 110, 0), (190, 0, 40), (230, 120, 0)


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
    maps = anomaly_maps(model, probe.images,
                        score_config=replace(model.config.score, reference="none"))
    model.eval()
    with torch.inference_mode():
        x = to_model_input(probe.images, input_range)
        recon = to_unit(model.reconstruct(x).float(), input_range).cpu().numpy()
    x_unit = to_unit(x, input_range).numpy()
    spectrum = np.stack([_spectrum_gap(a, b) for a, b in zip(x_unit, recon, strict=True)])
    return {"input": x_unit, "reconstruction": recon, "residual": maps, "spectrum gap": spectrum}


def captions(scores: np.ndarray, labels: np.ndarray, calibration: Calibration | None
             ) -> list[tuple[str, str, tuple[int, int, int]]]:
    """Per patch: ``("score 0.0123", "reject", colour)``: green accept, red reject, orange with
    what went wrong (``"accept (missed)"``, ``"reject (false alarm)"``) when the decision
    contradicts the label; "no threshold" without a calibration. (Plain words: Pillow's
    built-in font has no check-mark glyphs.)"""
    if calibration is None:
        return [(f"score {score:.4g}" if np.isfinite(score) else "no score", "no threshold",
                 (60, 60, 60)) for score in scores]
    rejected = calibration.decide(scores)
    out = []
    for score, reject, label in zip(scores, rejected, labels, strict=True):
        right = bool(reject) == bool(label)
        colour = (REJECT if reject else ACCEPT) if right else WRONG
        wrong = "" if right else (" (false alarm)" if reject else " (missed)")
        out.append((f"score {score:.4g}", f"{'reject' if reject else 'accept'}{wrong}", colour))
    return out


def _colour_bar(height: int, scale: float, font: ImageFont.ImageFont) -> Image.Image:
    """A vertical ramp (top = ``scale``, bottom = 0) with its end values written beside it."""
    ramp = _hot(np.linspace(1.0, 0.0, height)[:, None].repeat(14, axis=1))
    bar = Image.new("RGB", (BAR_WIDTH, height), "white")
    bar.paste(Image.fromarray(ramp), (4, 0))
    draw = ImageDraw.Draw(bar)
    draw.text((22, 0), f"{scale:.3g}", fill="black", font=font)
    draw.text((22, height - FONT_SIZE - 2), "0", fill="black", font=font)
    return bar


def render_probe(model: torch.nn.Module, probe: ProbeSet, title: str = "",
                 calibration: Calibration | None = None, scores: np.ndarray | None = None
                 ) -> Image.Image:
    """The probe picture as an RGB image (see module docstring for its layout).

    ``scores``: the probe patches' scores as the trial made them (``val_scores.npy`` at
    ``probe.indices``). Without them each patch is scored on its own, which a strip-reference
    model cannot do: its columns then say "no score" and nothing is decided.
    """
    rows = probe_rows(model, probe)
    if scores is None and model.config.score.reference != "none":
        scores, calibration = np.full(len(probe.labels), np.nan), None
    elif scores is None:
        scores = patch_scores(rows["residual"], model.config.score)
    k, size = probe.images.shape[0], probe.images.shape[-1]
    tile_size = min(max(size, MIN_CELL), MAX_CELL)
    cell = tile_size + GAP
    font = ImageFont.load_default(size=FONT_SIZE)
    scales = {"residual": max(float(rows["residual"].max()), 1e-12),
              "spectrum gap": max(float(rows["spectrum gap"].max()), 1e-12)}
    top_of_rows = TITLE_HEIGHT + HEADER_HEIGHT
    canvas = Image.new("RGB", (LABEL_WIDTH + k * cell + BAR_WIDTH,
                               top_of_rows + len(ROWS) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill="black", font=font)
    line = FONT_SIZE + 4
    for column, texts in enumerate(captions(scores, probe.labels, calibration)):
        kind = "defect" if probe.labels[column] else "normal"
        left = LABEL_WIDTH + column * cell + 4
        draw.text((left, TITLE_HEIGHT), f"{kind} #{probe.indices[column]}", fill="black",
                  font=font)
        draw.text((left, TITLE_HEIGHT + line), texts[0], fill="black", font=font)
        draw.text((left, TITLE_HEIGHT + 2 * line), texts[1], fill=texts[2], font=font)
    if calibration is not None:
        draw.text((6, TITLE_HEIGHT + line), f"threshold {calibration.threshold:.4g}",
                  fill="black", font=font)
    for row, name in enumerate(ROWS):
        top = top_of_rows + row * cell
        draw.text((6, top + cell // 2 - FONT_SIZE), name, fill="black", font=font)
        if name == "spectrum gap":
            draw.text((6, top + cell // 2 + 4), "log |F| diff", fill="gray", font=font)
        for column in range(k):
            if name in ("input", "reconstruction"):
                tile = _gray(rows[name][column])
            else:
                tile = _hot(rows[name][column] / scales[name])
            resample = Image.NEAREST if tile_size >= size else Image.BILINEAR
            picture = Image.fromarray(tile).resize((tile_size, tile_size), resample)
            canvas.paste(picture, (LABEL_WIDTH + column * cell, top))
        if name in scales:
            canvas.paste(_colour_bar(tile_size, scales[name], font), (LABEL_WIDTH + k * cell, top))
    return canvas
