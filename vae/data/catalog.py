"""Decode every strip of a scan into one ``PatchSet`` (all patches, before splitting).

This is the expensive step — PNG decoding — that the cache (``vae.data.cache``) runs once per
machine and data set; logs progress every few seconds because a full AITEX set takes a while.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from vae.data.config import DataConfig
from vae.data.layouts import Issue, Scan
from vae.data.patches import cut, labels_from_masks
from vae.data.patchset import PatchSet, StripInfo
from vae.data.readers import read_strip
from vae.data.summary import DataSummary

logger = logging.getLogger(__name__)
PROGRESS_SECONDS = 5.0


def build_catalog(scan: Scan, config: DataConfig) -> tuple[PatchSet, DataSummary]:
    summary = DataSummary(format=config.format, root=str(scan.root),
                          patch_size=config.patch_size, stride=config.catalog_stride,
                          resize=config.resize)
    for issue in scan.skipped:
        logger.warning("skipping %s: %s", issue.file, issue.reason)
        summary.skip(issue)
    for issue in scan.notes:
        summary.note(issue)
    strips: list[StripInfo] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("images", "masks", "x", "y", "strip")}
    started = last_log = time.monotonic()
    for number, source in enumerate(scan.sources, start=1):
        result = read_strip(scan, source, config)
        if isinstance(result, Issue):
            logger.warning("skipping %s: %s", result.file, result.reason)
            summary.skip(result)
        else:
            for note in result.notes:
                summary.note(note)
            images, masks, xs, ys = cut(result.image, result.mask, config.patch_size,
                                        config.catalog_stride)
            for key, value in (("images", images), ("masks", masks), ("x", xs), ("y", ys),
                               ("strip", np.full(len(xs), len(strips), np.int32))):
                parts[key].append(value)
            strips.append(StripInfo(
                strip=source.strip, file=scan.rel(source.image), fabric=source.fabric,
                defect_code=source.defect_code, defective=source.defective,
                shape=tuple(int(v) for v in result.mask.shape),
                mask_files=tuple(scan.rel(m) for m in source.masks),
                split_hint=source.split_hint))
            summary.add_strip(source.fabric, source.defective)
        now = time.monotonic()
        if now - last_log > PROGRESS_SECONDS or number == len(scan.sources):
            logger.info("decoded %d/%d strips (%.1f s)", number, len(scan.sources), now - started)
            last_log = now
    hint = summary.include_hint()
    if hint:
        logger.warning("%s", hint)
    if not strips:
        return PatchSet.empty(config.patch_size, config.channels), summary
    masks = np.concatenate(parts["masks"])
    defect_pixels = masks.reshape(len(masks), -1).sum(1).astype(np.int32)
    catalog = PatchSet(images=np.concatenate(parts["images"]), masks=masks,
                       labels=labels_from_masks(defect_pixels, config.min_defect_pixels),
                       x=np.concatenate(parts["x"]).astype(np.int32),
                       y=np.concatenate(parts["y"]).astype(np.int32),
                       strip_index=np.concatenate(parts["strip"]),
                       synthetic=np.zeros(len(masks), bool), strips=tuple(strips),
                       defect_pixels=defect_pixels)
    summary.patches = {"total": len(catalog), "anomalous": int(catalog.labels.sum())}
    return catalog, summary
