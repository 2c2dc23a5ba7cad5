"""Score a set of images end to end: ``scores.csv``, ``metrics.json``, overlays, ``summary.json``.

Images stream through one at a time: each is resized first when the model's data was
(``model.input_resize``, or ``resize=`` to override) and cut into patches; patches of several
images are scored together so a GPU sees full batches, and memory stays bounded on a full AITEX
set. Pixel metrics are computed on the stitched maps (a defect cut by a patch border stays one
region), resized back to the original image, so metrics and overlays compare with the original
mask.
Only the ``max_overlays`` most interesting strips are kept for pictures: defective ones first,
then the highest-scoring ones. ``reference="strip_fabric"`` (or ``"strip_peak"``, ``"strip"``)
scores each image's patches against the image's other patches (``vae.score.reference``)
instead of with the model's own per-patch scorer.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vae.config import check_resize
from vae.data.layouts import Issue
from vae.data.patches import cut, labels_from_masks
from vae.data.readers import TOO_SMALL, fit
from vae.data.resize import resize_map
from vae.score.calibration import decide
from vae.score.inputs import Item, Source
from vae.score.maps import score_patches, scoring_layout, scoring_precision
from vae.score.metrics import evaluate_scores
from vae.score.overlay import save_overlay
from vae.score.pixel_metrics import PixelSample
from vae.score.reference import (
    REFERENCES,
    lonely_patch,
    reference_scorer,
    signed_residuals,
    strip_reference,
)
from vae.score.stitch import stitch

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("file", "patch_index", "x", "y", "score", "decision", "label", "fabric",
               "defect_code")
SCORES_FILE, METRICS_FILE, SUMMARY_FILE, OVERLAY_DIR = ("scores.csv", "metrics.json",
                                                        "summary.json", "overlays")
PROGRESS_SECONDS = 5.0
OVERLAY_SCALE_QUANTILE = 0.99  # patch scores above it saturate the colour map


@dataclass
class ScoreReport:
    """What a run did; ``to_dict()`` is ``summary.json``."""

    out_dir: Path
    images: int = 0
    patches: int = 0
    skipped: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    overlays: list[str] = field(default_factory=list)
    threshold: float | None = None
    model: str | None = None
    score_config: dict[str, Any] = field(default_factory=dict)
    nonfinite: int = 0  # patches whose score is NaN/inf: rejected, never accepted
    resize: int = 0  # images were resized to resize² before patching (0: native)
    reference: str = "none"  # strip_fabric | strip_peak | strip: against the image's others

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "score_config": self.score_config,
                "reference": self.reference,
                "images": self.images, "patches": self.patches, "threshold": self.threshold,
                "nonfinite_scores": self.nonfinite,
                "resize": self.resize,
                "skipped": [{"file": i.file, "reason": i.reason, "kind": i.group}
                            for i in self.skipped],
                "notes": [{"file": i.file, "note": i.reason, "kind": i.group}
                          for i in self.notes],
                "files": {"scores": SCORES_FILE,
                          "metrics": METRICS_FILE if self.metrics is not None else None,
                          "overlays": self.overlays}}


def _json_safe(value: Any) -> Any:
    """NaN/inf → null: strict JSON parsers reject the bare ``NaN`` Python's json writes."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=True) + "\n")


@dataclass
class _Cut:
    item: Item
    patches: np.ndarray  # uint8 (n, C, P, P)
    labels: np.ndarray | None
    xs: np.ndarray
    ys: np.ndarray
    shape: tuple[int, int]  # (H, W) the patches were cut from (after resizing)

    @property
    def corners(self) -> np.ndarray:
        """(n, 2) (x, y) of each patch in the image."""
        return np.stack([self.xs, self.ys], 1)


class _Run:
    """State of one scoring pass: CSV writer, per-patch arrays, pixel sample, overlay heap."""

    def __init__(self, model: nn.Module, out: Path, writer: Any, *, threshold: float | None,
                 batch_size: int, device: torch.device | str | None, max_overlays: int,
                 reference: str) -> None:
        self.model, self.out, self.writer, self.threshold = model, out, writer, threshold
        self.batch_size, self.device, self.max_overlays = batch_size, device, max_overlays
        self.reference = reference
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.files: list[np.ndarray] = []
        self.fabrics: list[np.ndarray] = []
        self.pixels = PixelSample()
        self.heap: list[tuple[tuple[int, float], int, Item, np.ndarray]] = []
        self.counter = itertools.count()

    def flush(self, pending: list[_Cut]) -> None:
        if not pending:
            return
        patches = np.concatenate([c.patches for c in pending])
        score = self._own if self.reference == "none" else self._referenced
        for part, (scores, maps) in zip(pending, score(patches, pending), strict=True):
            self._strip(part, scores, maps)
        pending.clear()

    def _own(self, patches: np.ndarray, parts: list[_Cut]) -> Iterator[tuple[np.ndarray, ...]]:
        """Each part's (scores, maps) from the model's own scorer, in one pass over ``patches``."""
        own = replace(self.model.config.score, reference="none")
        scores, maps = score_patches(self.model, patches, score_config=own,
                                     batch_size=self.batch_size, device=self.device)
        bounds = np.cumsum([len(part.patches) for part in parts])[:-1]
        yield from zip(np.split(scores, bounds), np.split(maps, bounds), strict=True)

    def _referenced(self, patches: np.ndarray, parts: list[_Cut]
                    ) -> Iterator[tuple[np.ndarray, ...]]:
        """Each part's (scores, maps) against the part's own other patches."""
        residuals, clipped = signed_residuals(self.model, patches,
                                              batch_size=self.batch_size, device=self.device)
        bounds = np.cumsum([len(part.patches) for part in parts])[:-1].tolist()
        for part, strip, columns in zip(parts, torch.tensor_split(residuals, bounds),
                                        torch.tensor_split(clipped, bounds), strict=True):
            with scoring_precision(residuals.device):  # no TF32 in the distances either
                maps, scores = strip_reference(strip, part.corners, reference=self.reference,
                                               clipped=columns)
            yield scores.cpu().numpy(), maps.cpu().numpy()

    def _strip(self, part: _Cut, scores: np.ndarray, maps: np.ndarray) -> None:
        item = part.item
        decisions = [""] * len(scores) if self.threshold is None \
            else decide(scores, self.threshold).astype(int).tolist()
        labels = [""] * len(scores) if part.labels is None else part.labels.tolist()
        for i, (x, y, score) in enumerate(zip(part.xs, part.ys, scores, strict=True)):
            self.writer.writerow([item.file, i, int(x), int(y), f"{score:.9g}", decisions[i],
                                  labels[i], item.fabric, item.defect_code])
        self.scores.append(scores)
        self.files.append(np.full(len(scores), item.file, dtype=object))
        self.fabrics.append(np.full(len(scores), item.fabric, dtype=object))
        strip_map = stitch(maps, part.xs, part.ys, part.shape)
        strip_map = resize_map(strip_map, *item.image.shape[1:])  # back to the original size
        if part.labels is not None:
            self.labels.append(part.labels)
            self.pixels.add(strip_map, item.mask)
        if self.max_overlays > 0:
            defective = int(item.mask is not None and bool(item.mask.any()))
            entry = ((defective, float(scores.max())), next(self.counter), item, strip_map)
            if len(self.heap) < self.max_overlays:
                heapq.heappush(self.heap, entry)
            else:
                heapq.heappushpop(self.heap, entry)

    def write_overlays(self) -> list[str]:
        if not self.heap or not self.scores:
            return []
        vmax = float(np.quantile(np.concatenate(self.scores), OVERLAY_SCALE_QUANTILE))
        ranked = sorted(self.heap, key=lambda e: (e[0], -e[1]), reverse=True)
        names = []
        for rank, (_, _, item, strip_map) in enumerate(ranked):
            name = f"{OVERLAY_DIR}/{rank:03d}_{Path(item.file).stem}.png"
            save_overlay(self.out / name, item.image, strip_map, vmax, item.mask)
            names.append(name)
        return names


def _cut(item: Item, patch_size: int, stride: int, resize: int, min_defect_pixels: int
         ) -> _Cut | Issue:
    """The item's patches (of the resized image when ``resize``), or why it has none."""
    mask = item.mask if item.mask is not None else np.zeros(item.image.shape[1:], dtype=bool)
    image, mask, issue = fit(item.file, item.image, mask, patch_size, stride, resize)
    if issue is not None and issue.kind == TOO_SMALL:
        return Issue(item.file, f"{issue.reason}; --resize {patch_size} would include it",
                     kind=TOO_SMALL)
    patches, masks, xs, ys = cut(image, mask, patch_size, stride)
    labels = None if item.mask is None else labels_from_masks(
        masks.reshape(len(masks), -1).sum(1), min_defect_pixels)
    return _Cut(item, patches, labels, xs, ys, mask.shape)


def score_source(model: nn.Module, source: Source, out_dir: str | Path, *,
                 threshold: float | None = None, batch_size: int = 64,
                 device: torch.device | str | None = None, stride: int | None = None,
                 resize: int | None = None, min_defect_pixels: int = 1,
                 max_overlays: int = 20, model_name: str | None = None,
                 reference: str | None = None) -> ScoreReport:
    """Score every image of ``source`` with ``model`` (its own ``config.score``) into ``out_dir``.

    ``threshold`` (e.g. from the model's ``calibration.json``) fills the ``decision`` column
    (1 = anomalous: score > threshold). Bad images are skipped and listed, never fatal.
    ``reference``: None scores as the model was validated (``score.reference``);
    ``"strip_fabric"``, ``"strip_peak"`` or ``"strip"`` scores each image's patches against its
    other patches (an image where a patch has no disjoint partner is skipped), ``"none"`` each
    patch on its own.
    The model's calibration fits only its own choice.
    """
    if reference is None:
        reference = model.config.score.reference
    if reference not in REFERENCES:
        raise ValueError(f"reference={reference!r} is invalid; allowed: {', '.join(REFERENCES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patch_size = model.config.model.image_size
    stride = stride or patch_size
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= patch_size:
        raise ValueError(f"stride={stride!r} is invalid; allowed: an integer in [1, {patch_size}] "
                         "(a larger stride would leave pixels unscored)")
    trained_resize = model.config.model.input_resize
    if resize is None:
        resize = trained_resize
    check_resize("resize", resize, patch_size)
    if resize != trained_resize:
        logger.warning("scoring with resize %d but the model was trained on data resized to %d "
                       "(0 = native): its calibration threshold may not fit these scores",
                       resize, trained_resize)
    report = ScoreReport(out_dir=out, skipped=list(source.skipped), threshold=threshold,
                         model=model_name, resize=resize, reference=reference,
                         score_config=asdict(replace(model.config.score, reference="none"))
                         if reference == "none" else reference_scorer(reference))
    started = last_log = time.monotonic()
    with scoring_layout(model), open(out / SCORES_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        run = _Run(model, out, writer, threshold=threshold, batch_size=batch_size,
                   device=device, max_overlays=max_overlays, reference=reference)
        pending: list[_Cut] = []
        for number, entry in enumerate(source.items, start=1):
            part = entry if isinstance(entry, Issue) else \
                _cut(entry, patch_size, stride, resize, min_defect_pixels)
            lonely = lonely_patch(part.corners, patch_size, patch_size) \
                if reference != "none" and isinstance(part, _Cut) else None
            if lonely is not None:
                part = Issue(part.item.file, f"the patch at {lonely} shares pixels with every "
                             "other patch of the image (or is its only one): --reference "
                             f"{reference} compares a patch with patches that share none; use "
                             f"--stride {patch_size}, or --reference none", kind="reference")
            if isinstance(part, Issue):
                logger.warning("skipping %s: %s", part.file, part.reason)
                report.skipped.append(part)
            else:
                pending.append(part)
                report.images += 1
                report.patches += len(part.patches)
                if sum(len(c.patches) for c in pending) >= batch_size:
                    run.flush(pending)
            now = time.monotonic()
            if now - last_log > PROGRESS_SECONDS or number == source.total:
                logger.info("scored %d/%d images, %d patches (%.1f patches/s)", number,
                            source.total, report.patches,
                            report.patches / max(now - started, 1e-9))
                last_log = now
        run.flush(pending)
    report.notes = list(source.notes)
    if run.scores:
        report.nonfinite = int((~np.isfinite(np.concatenate(run.scores))).sum())
    if report.nonfinite:
        logger.error("%d patch score(s) are NaN or infinite: they are rejected, and no metric is "
                     "computed (the model cannot tell; check its weights)", report.nonfinite)
    elif source.labelled and run.labels:
        report.metrics = evaluate_scores(
            np.concatenate(run.scores), np.concatenate(run.labels),
            strips=np.concatenate(run.files), fabrics=np.concatenate(run.fabrics),
            pixels=run.pixels)
        write_json(out / METRICS_FILE, report.metrics)
    report.overlays = run.write_overlays()
    write_json(out / SUMMARY_FILE, report.to_dict())
    return report
