"""``aitexvae pull``: the registered champion (or any model/run URI) into a local folder.

``load_model(model_ref)`` is what other commands (``aitexvae score --model``) use to accept a
local folder or a ``models:/`` / ``runs:/`` URI alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracking.settings import DEFAULT_MODEL_URI

__all__ = ["load_model", "register", "resolve_model_dir"]


def resolve_model_dir(model_ref: str, tracking_uri: str | None = None) -> Path:
    """A local folder for a folder path or a ``models:/``/``runs:/`` URI (pulled; see pull.py)."""
    from tracking.pull import resolve_model_dir as resolve

    return resolve(model_ref, tracking_uri)


def load_model(model_ref: str, tracking_uri: str | None = None):
    """``vae.load`` of a local model folder or of a pulled ``models:/``/``runs:/`` URI, with
    its calibration attached as ``model.calibration`` when the folder has one."""
    from tracking.pull import load_model as load

    return load(model_ref, tracking_uri)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pull", help="download a registered model into a folder that vae.load reads",
        description="Download a model (default: the champion of the latest search) with its "
                    "weights (safetensors), config and calibration. Pickled files are refused.")
    parser.add_argument("--model-uri", default=DEFAULT_MODEL_URI,
                        help="models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH "
                             f"(default {DEFAULT_MODEL_URI})")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store the search logged to (default $MLFLOW_TRACKING_URI, "
                             "else sqlite:///mlflow.db)")
    parser.add_argument("--out", required=True, help="folder to write the model into")
    parser.set_defaults(func=run_pull)


def run_pull(args: argparse.Namespace) -> int:
    from tracking.artifacts import UnsafeArtifactError
    from tracking.preflight import TrackingUnavailableError
    from tracking.pull import pull
    try:
        pulled = pull(args.model_uri, args.out, tracking_uri=args.tracking_uri)
    except (ValueError, FileNotFoundError, TrackingUnavailableError, UnsafeArtifactError) as error:
        print(f"aitexvae pull: error: {error}", file=sys.stderr)
        return 2
    calibration = "with calibration.json" if pulled.calibrated else "WITHOUT calibration.json"
    print(f"pulled {pulled.model_uri} into {pulled.path} ({calibration}); load it with "
          f"vae.load({str(pulled.path)!r})")
    return 0
