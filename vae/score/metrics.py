"""Patch-level metrics (AUROC, F1-max) and the combined report ``evaluate_scores``.

On AITEX, normal and defective strips come in different fabric mixes, so an AUROC of anomalous
patches against *all* normal patches can reward telling fabrics apart rather than finding
defects. ``evaluate_scores`` therefore also reports it **fabric-matched**: anomalous patches
against the clean patches of the same defective strips (same fabric, same roll, same
lighting), and per fabric. Where a metric needs both classes and one is missing it is NaN
(``null`` in JSON) with a warning, never an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from vae.score.pixel_metrics import PixelSample, aupro, pixel_auroc

logger = logging.getLogger(__name__)

__all__ = ["aupro", "evaluate_scores", "f1_max", "image_auroc", "pixel_auroc"]


def _check(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    raw = np.asarray(labels).reshape(-1)
    if scores.shape != raw.shape:
        raise ValueError(f"need one label per score: {scores.size} scores, {raw.size} labels")
    if raw.size and not np.isin(raw, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), got values "
                         f"{sorted(set(np.unique(raw).tolist()) - {0, 1})[:5]}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} score(s) are NaN or infinite")
    return scores, raw.astype(bool)


def _both_classes(labels: np.ndarray, what: str, *, quiet: bool = False) -> bool:
    n_pos = int(labels.sum())
    if 0 < n_pos < labels.size:
        return True
    (logger.debug if quiet else logger.warning)(
        "%s is undefined with %d anomalous and %d normal patches; reporting NaN", what, n_pos,
        labels.size - n_pos)
    return False


def image_auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, *,
                quiet: bool = False) -> float:
    """ROC AUC of patch scores against patch labels (1 = anomalous); NaN with one class only."""
    scores, labels = _check(scores, labels)
    if not _both_classes(labels, "patch AUROC", quiet=quiet):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def f1_max(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
           ) -> tuple[float, float]:
    """Best F1 over all thresholds and that threshold (anomalous when ``score >= threshold``)."""
    scores, labels = _check(scores, labels)
    if not _both_classes(labels, "F1-max"):
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last (precision 1, recall 0) point has no threshold; 0/0 at precision = recall = 0.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator),
                   where=denominator > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def _patch_aurocs(scores: np.ndarray, labels: np.ndarray, strips: np.ndarray | None,
                  quiet: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n_anomalous": int(labels.sum()), "n_normal": int((~labels).sum()),
        "patch_auroc": image_auroc(scores, labels, quiet=quiet)}
    if strips is not None:
        defective_strips = np.unique(strips[labels])
        matched = labels | np.isin(strips, defective_strips)  # anomalies + clean on their strips
        out["n_normal_fabric_matched"] = int((matched & ~labels).sum())
        out["patch_auroc_fabric_matched"] = image_auroc(scores[matched], labels[matched],
                                                        quiet=quiet)
    return out


def evaluate_scores(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, *,
                    strips: Sequence[str] | np.ndarray | None = None,
                    fabrics: Sequence[str] | np.ndarray | None = None,
                    maps: np.ndarray | Sequence[np.ndarray] | None = None,
                    masks: np.ndarray | Sequence[np.ndarray] | None = None,
                    pixels: PixelSample | None = None, fpr_limit: float = 0.3) -> dict[str, Any]:
    """All metrics of one scored set, as a JSON-ready dict (NaN where undefined).

    ``strips``/``fabrics`` name each patch's strip and fabric (for the fabric-matched and
    per-fabric AUROCs). Pixel metrics come from ``maps`` + ``masks`` (patch or stitched strip
    maps) or from an already filled ``PixelSample``; without either they are left out.
    """
    scores, labels = _check(scores, labels)
    strips = None if strips is None else np.asarray(strips).astype(str)
    fabrics = None if fabrics is None else np.asarray(fabrics).astype(str)
    for name, values in (("strips", strips), ("fabrics", fabrics)):
        if values is not None and values.shape != labels.shape:
            raise ValueError(f"need one entry of {name} per score: {scores.size} scores, "
                             f"{values.size} {name}")
    result: dict[str, Any] = {"n_patches": int(scores.size)}
    result.update(_patch_aurocs(scores, labels, strips, quiet=False))
    result["f1_max"], result["f1_threshold"] = f1_max(scores, labels)
    if maps is not None or masks is not None:
        if maps is None or masks is None:
            raise ValueError("pixel metrics need both maps and masks")
        pixels = PixelSample.from_maps(maps, masks)
    if pixels is not None:
        result["pixel_auroc"] = pixels.auroc()
        result["aupro"] = pixels.aupro(fpr_limit)
        result["aupro_fpr_limit"] = fpr_limit
    if fabrics is not None:
        result["per_fabric"] = {
            fabric: _patch_aurocs(scores[fabrics == fabric], labels[fabrics == fabric],
                                  None if strips is None else strips[fabrics == fabric],
                                  quiet=True)
            for fabric in sorted(np.unique(fabrics))}
    return result
