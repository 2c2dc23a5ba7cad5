"""``aitexvae data synth`` and ``aitexvae data check``: thin wrappers over ``vae.data``.

``data check`` reads a data set exactly as a search would (scan, decode or cache hit, split) and
prints the summary as a table, or as JSON with ``--json`` (keys: see ``vae.data.summary``).
Bad input prints one ``error:`` line (plus the expected layout for a wrong root) and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from vae.config import ConfigError
from vae.data.config import SMALL_SYNTHETIC_HEIGHT, DataConfig, default_format
from vae.data.errors import DataError
from vae.data.load import load_splits
from vae.data.synth import generate_synthetic


def _fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def run_synth(args: argparse.Namespace) -> int:
    try:
        out = generate_synthetic(args.out, full=args.full, seed=args.seed)
    except (FileExistsError, OSError) as error:
        return _fail(error)
    print(f"wrote a {'full' if args.full else 'small'} synthetic AITEX-layout data set to {out}")
    return 0


def check_config(args: argparse.Namespace) -> DataConfig:
    data_format = args.format or default_format(args.data_root)
    patch_size = args.patch_size
    if patch_size is None:  # not `or`: --patch-size 0 is an error, not the default
        patch_size = SMALL_SYNTHETIC_HEIGHT if data_format == "synthetic" and not args.full \
            else 256
    return DataConfig(format=data_format, root=args.data_root, patch_size=patch_size,
                      stride=args.stride, resize=args.resize, seed=args.seed,
                      synthetic_full=args.full,
                      cache=not args.no_cache, cache_dir=args.cache_dir)


def run_check(args: argparse.Namespace) -> int:
    try:
        splits = load_splits(check_config(args))
    except (ConfigError, DataError, FileExistsError) as error:
        return _fail(error)
    summary = splits.summary
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.table())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="generate or check a data set")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    synth = commands.add_parser("synth", help="write a synthetic AITEX-layout data set")
    synth.add_argument("--out", required=True, help="new or empty output directory")
    synth.add_argument("--full", action="store_true",
                       help="AITEX size: 7 fabrics, 4096x256 strips, 140 + 105 strips")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=run_synth)

    check = commands.add_parser("check", help="read a data set as a search would; summarise it")
    check.add_argument("--data-root", default=None,
                       help="data set directory (default: the embedded synthetic set)")
    check.add_argument("--format", choices=("aitex", "folder", "synthetic"), default=None,
                       help="layout (default: aitex with --data-root, else synthetic)")
    check.add_argument("--patch-size", type=int, default=None,
                       help="patch side in pixels (default 256; 64 for the small synthetic set)")
    check.add_argument("--stride", type=int, default=None, help="default: the patch size")
    check.add_argument("--resize", type=int, default=None, metavar="N",
                       help="resize every image to NxN before cutting patches; 0: native "
                            "resolution (default: the patch size for --format folder, 0 else)")
    check.add_argument("--seed", type=int, default=0, help="split seed")
    check.add_argument("--full", action="store_true",
                       help="with the embedded synthetic set: its AITEX-sized version")
    check.add_argument("--cache-dir", default=None, help="patch cache directory")
    check.add_argument("--no-cache", action="store_true", help="decode without the cache")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(func=run_check)
