"""The ``aitexvae`` command: a thin argparse layer over functions users can call from Python.

Each package registers its own subcommands (``register(subparsers)``); this module only wires
them together and decides how logs look.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# (module, registrar) pairs; each module defines `register(subparsers)`.
COMMAND_MODULES = ("vae.data.cli", "vae.score.cli", "search.tune_cli", "tracking.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aitexvae",
        description="Find the best VAE for fabric-defect detection with Ray Tune; track it in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:  # TODO(integration): drop once every command module exists
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
