"""Decoded patches stored once per machine as uint8 ``.npy`` files, keyed by source and settings.

Key: SHA-256 of the cache format version, the resolved root, every file the scan looked at as
``(relative path, size, mtime_ns)``, and the settings that change the decoded pixels
(patch_size, stride, resize, channels, mask_threshold, max_image_pixels). Stat data, not a content
hash: checking a cache must cost far less than decoding (hashing a full AITEX set reads
~250 MB on every trial), and any rewrite, copy without ``-p``, addition or removal of a file
changes size or mtime. A file replaced in place by one of equal size *and* equal mtime_ns
(e.g. ``rsync -t`` of edited content) is not noticed: delete the cache directory then.
Labels are not part of the key: they follow from the stored per-patch defect-pixel counts.

Location: ``DataConfig.cache_dir`` or ``<AITEXVAE_HOME>/cache/patches``; one entry per key in
``<lineage>-<key>/`` where lineage hashes root + settings, so a rebuild after a source change
replaces the stale entry. Entries are written to a temporary directory and renamed into place,
so racing processes never read a half-written entry (the loser discards its copy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vae.data.config import DataConfig
from vae.data.layouts import Scan
from vae.data.patchset import PatchSet, StripInfo
from vae.data.summary import DataSummary

logger = logging.getLogger(__name__)
CACHE_VERSION = 1
ARRAYS = ("images", "x", "y", "strip_index", "defect_pixels", "mask_rows", "masks")


def _digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def entry_name(scan: Scan, config: DataConfig) -> str:
    settings = {"version": CACHE_VERSION, "format": scan.format,
                "root": str(scan.root.resolve()), "patch_size": config.patch_size,
                "stride": config.catalog_stride, "channels": config.channels,
                "mask_threshold": config.mask_threshold,
                "max_image_pixels": config.max_image_pixels}
    if config.resize:  # only when set, so entries cut at native resolution keep their key
        settings["resize"] = config.resize
    files = []
    for path in scan.files:
        stat = path.stat()
        files.append((scan.rel(path), stat.st_size, stat.st_mtime_ns))
    return f"{_digest(settings)[:12]}-{_digest([settings, files])[:20]}"


def load(directory: Path, min_defect_pixels: int) -> tuple[PatchSet, DataSummary] | None:
    """The cached catalog, or ``None`` when absent or unreadable (it is then rebuilt)."""
    if not (directory / "meta.json").is_file():
        return None
    try:
        meta = json.loads((directory / "meta.json").read_text())
        arrays = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
        n, p = arrays["images"].shape[0], arrays["images"].shape[-1]
        masks = np.zeros((n, p, p), dtype=bool)  # only patches with defect pixels are stored
        masks[arrays["mask_rows"]] = arrays["masks"]
        strips = tuple(StripInfo(**{**s, "shape": tuple(s["shape"]),
                                    "mask_files": tuple(s["mask_files"])})
                       for s in meta["strips"])
        catalog = PatchSet(images=arrays["images"], masks=masks,
                           labels=(arrays["defect_pixels"] >= min_defect_pixels).astype(np.int64),
                           x=arrays["x"], y=arrays["y"], strip_index=arrays["strip_index"],
                           synthetic=np.zeros(n, bool), strips=strips,
                           defect_pixels=arrays["defect_pixels"])
        return catalog, DataSummary.from_dict(meta["summary"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        logger.warning("patch cache %s is unreadable (%s); rebuilding it", directory, error)
        return None


def save(directory: Path, catalog: PatchSet, summary: DataSummary) -> None:
    """Write atomically (temp dir + rename); drop stale entries of the same lineage."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        rows = np.flatnonzero(catalog.defect_pixels > 0)
        arrays = {"images": catalog.images, "x": catalog.x, "y": catalog.y,
                  "strip_index": catalog.strip_index, "defect_pixels": catalog.defect_pixels,
                  "mask_rows": rows, "masks": catalog.masks[rows]}
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        meta = {"version": CACHE_VERSION, "summary": summary.to_dict(),
                "strips": [{**vars(s), "shape": list(s.shape), "mask_files": list(s.mask_files)}
                           for s in catalog.strips]}
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: marks completeness
        try:
            os.rename(tmp, directory)
        except OSError:  # another process renamed its copy first; theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
            return
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lineage = directory.name.split("-")[0]
    for stale in directory.parent.glob(f"{lineage}-*"):
        if stale != directory:
            logger.info("removing stale patch cache %s", stale)
            shutil.rmtree(stale, ignore_errors=True)


def size_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*") if p.is_file())
