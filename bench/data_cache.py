"""Benchmark: build the patch cache for an AITEX-sized data set, then load it from the cache.

Side by side in one run: (1) a cold build — scan, decode every PNG, cut 256×256 patches, write
the cache; (2) loading the same catalog from the cache (median of ``--repeats`` loads). Prints
seconds and MB for both and ends with ``ratio cache_load_speedup: X`` (build s / load s).

    .venv/bin/python bench/data_cache.py                 # generates a --full synthetic set first
    .venv/bin/python bench/data_cache.py --root /data/AITEX  # the real data set
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from vae.data import DataConfig, generate_synthetic, load_catalog
from vae.data.cache import size_bytes


def _mb(num_bytes: float) -> float:
    return num_bytes / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="AITEX-layout data set (default: generate "
                        "the --full synthetic set in a temporary directory)")
    parser.add_argument("--repeats", type=int, default=3, help="cache loads to take the median of")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="aitexvae-bench-") as tmp:
        root = Path(args.root) if args.root else None
        if root is None:
            started = time.perf_counter()
            root = generate_synthetic(Path(tmp) / "synthetic-full", full=True, seed=0)
            print(f"generated the full synthetic set in {time.perf_counter() - started:.1f} s")
        config = DataConfig(format="aitex", root=str(root), patch_size=256,
                            cache_dir=str(Path(tmp) / "cache"))
        source_mb = _mb(sum(p.stat().st_size for p in root.rglob("*.png")))

        started = time.perf_counter()
        catalog, summary = load_catalog(config)
        build_s = time.perf_counter() - started
        assert not summary.cache["hit"], "the first load must build the cache"
        cache_mb = _mb(size_bytes(Path(summary.cache["path"])))
        arrays_mb = _mb(catalog.images.nbytes + catalog.masks.nbytes)
        del catalog

        loads = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            cached, summary = load_catalog(config)
            loads.append(time.perf_counter() - started)
            assert summary.cache["hit"], "the second load must hit the cache"
            del cached
        load_s = statistics.median(loads)

    print(f"data set: {summary.strips['normal']} normal + {summary.strips['defective']} defective "
          f"strips, {summary.patches['total']} patches of 256x256")
    print(f"build (decode PNG + cut + write cache): {build_s:.3f} s, read {source_mb:.1f} MB of "
          f"PNG, wrote {cache_mb:.1f} MB of cache ({arrays_mb:.1f} MB of arrays in memory)")
    print(f"load from cache (median of {args.repeats}: "
          f"{', '.join(f'{s:.3f}' for s in loads)} s): {load_s:.3f} s, read {cache_mb:.1f} MB")
    print(f"ratio cache_load_speedup: {build_s / load_s:.1f}")


if __name__ == "__main__":
    main()
