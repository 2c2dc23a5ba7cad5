"""``load_splits``: the one call a search makes — scan, decode once (cached), split.

Order of work: resolve the root (generating the embedded synthetic set on first use), scan the
layout (stat only), look the catalog up in the patch cache, decode and cache it on a miss, then
split by strip and inject the validation defects (cheap; not cached).
"""

from __future__ import annotations

import logging
from pathlib import Path

from vae.data.cache import entry_name, load, save
from vae.data.catalog import build_catalog
from vae.data.config import DataConfig
from vae.data.errors import DataError
from vae.data.home import default_cache_dir, ensure_synthetic
from vae.data.layouts import scan
from vae.data.patchset import PatchSet
from vae.data.splits import Splits, make_splits
from vae.data.summary import DataSummary, by_kind

logger = logging.getLogger(__name__)


def resolve_root(config: DataConfig) -> Path:
    if config.format == "synthetic":
        return ensure_synthetic(full=config.synthetic_full, root=config.root)
    return Path(config.root).expanduser()


def load_catalog(config: DataConfig) -> tuple[PatchSet, DataSummary]:
    """All patches of the data set (before splitting) and the read summary; uses the cache."""
    found = scan(resolve_root(config), config.format)
    directory = None
    if config.cache:
        cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir \
            else default_cache_dir()
        directory = cache_dir / entry_name(found, config)
        cached = load(directory, config.min_defect_pixels)
        if cached is not None:
            catalog, summary = cached
            logger.info("patch cache hit: %s (%d patches)", directory, len(catalog))
            summary.cache = {"hit": True, "path": str(directory)}
            summary.patches = {"total": len(catalog), "anomalous": int(catalog.labels.sum())}
            if summary.skipped:
                logger.warning("%d file(s) were skipped when this cache was built; "
                               "`aitexvae data check` lists them", len(summary.skipped))
            return catalog, summary
    logger.info("decoding %d strips under %s", len(found.sources), found.root)
    catalog, summary = build_catalog(found, config)
    if directory is not None and len(catalog):
        save(directory, catalog, summary)
    summary.cache = {"hit": False, "path": str(directory) if directory else None}
    return catalog, summary


def load_splits(config: DataConfig) -> Splits:
    """Train / val / test patch sets and a summary for ``config`` (see ``vae.data.splits``)."""
    catalog, summary = load_catalog(config)
    if not len(catalog):
        kinds = ", ".join(f"{len(entries)} x {kind}"
                          for kind, entries in by_kind(summary.skipped).items())
        hint = summary.include_hint()
        raise DataError(f"no usable patches under {summary.root!r} (format {config.format}, "
                        f"patch_size {config.patch_size}); {len(summary.skipped)} file(s) "
                        f"skipped{' (' + kinds + ')' if kinds else ''}"
                        f"{'; hint: ' + hint if hint else ''}")
    splits = make_splits(catalog, summary, config)
    if not len(splits.train):
        raise DataError(f"no defect-free training strips under {summary.root!r}; the search "
                        "trains on defect-free patches only")
    return splits
