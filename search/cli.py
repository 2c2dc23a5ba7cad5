"""The ``aitexvae`` command: a thin argparse layer over functions users can call from Python.

Each package registers its own subcommands (``register(subparsers)``); this module only wires
them together and decides how logs look. It sits on top of every package, so it is the one
place that may hand tracking's URI-aware model loader to ``vae``'s ``score`` command.
"""

from __future__ import annotations

import argparse
import logging
import sys

from search import tune_cli
from tracking import cli as tracking_cli
from vae.data import cli as data_cli
from vae.score import cli as score_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aitexvae",
        description="Find the best VAE for fabric-defect detection with Ray Tune; track it in "
                    "MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tune_cli.register(subparsers)
    data_cli.register(subparsers)
    score_cli.register(subparsers, load_model=tracking_cli.load_model)
    tracking_cli.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
