"""``aitexvae score``: score a data set or loose image files with a trained model.

Thin layer over ``vae.score.run.score_source``. ``register(subparsers, load_model=...)`` takes
the model loader as an argument so that ``vae`` stays free of MLflow: the default reads a local
directory written by ``vae.save``; ``search/cli.py`` passes one that also resolves
``models:/…`` and ``runs:/…`` URIs through tracking. A loader may attach a ``Calibration`` as
``model.calibration``; otherwise ``calibration.json`` beside a local model is used.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import vae
from vae.config import ConfigError
from vae.data.errors import DataError
from vae.data.summary import skip_lines
from vae.score.calibration import CALIBRATION_FILE, Calibration
from vae.score.inputs import DATA_FORMATS, dataset_source, files_source
from vae.score.reference import REFERENCES
from vae.train import select_device

logger = logging.getLogger(__name__)

ModelLoader = Callable[[str], nn.Module]


def load_local_model(reference: str) -> nn.Module:
    """A directory written by ``vae.save``; anything else raises with what is expected."""
    if not Path(reference).is_dir():
        raise ValueError(f"--model {reference!r} is not a directory; expected one written by "
                         "vae.save (config.json + model.safetensors). models:/ and runs:/ URIs "
                         "need the MLflow-aware `aitexvae score` of the installed package")
    return vae.load(reference)


def _threshold(args: argparse.Namespace, model: nn.Module) -> float | None:
    if args.threshold is not None:
        if not math.isfinite(args.threshold):
            raise ValueError(f"--threshold {args.threshold!r} is invalid; allowed: a finite "
                             "number (patches scoring above it are rejected)")
        return args.threshold
    own = model.config.score.reference
    if args.reference not in (None, own):
        logger.warning("the model's calibrated threshold is for its own scores (reference "
                       "%s), not for --reference %s scores: the decision column stays empty "
                       "unless --threshold is given", own, args.reference)
        return None
    calibration = getattr(model, "calibration", None)
    path = Path(args.model) / CALIBRATION_FILE
    if not isinstance(calibration, Calibration) and path.is_file():
        try:
            calibration = Calibration.from_json(path)
        except ValueError as error:
            logger.warning("%s; the decision column stays empty", error)
    if isinstance(calibration, Calibration):
        return calibration.threshold
    logger.info("no calibration for %s and no --threshold: the decision column stays empty",
                args.model)
    return None


def _device(name: str) -> torch.device:
    if name == "auto":
        return select_device()
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is invalid; allowed: auto, cpu, cuda, cuda:N") \
            from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: CUDA is not available here; use auto or cpu")
    return device


def run_score(args: argparse.Namespace, load_model: ModelLoader) -> int:
    from vae.score.run import score_source

    try:
        tracking_uri = getattr(args, "tracking_uri", None)
        model = load_model(args.model, tracking_uri) if tracking_uri else load_model(args.model)
    except Exception as error:  # any loader (local, MLflow): one clear line, no traceback
        logger.debug("loading %s failed", args.model, exc_info=True)
        print(f"error: cannot load model {args.model!r}: {error}", file=sys.stderr)
        return 2
    config = model.config.model
    try:
        device = _device(args.device)
        if args.images:
            source = files_source(args.images, channels=config.in_channels)
        else:
            source = dataset_source(args.data_root, args.format, channels=config.in_channels)
        threshold = _threshold(args, model)
        report = score_source(model, source, args.out, threshold=threshold,
                              batch_size=args.batch_size, device=device,
                              stride=args.stride, resize=args.resize, max_overlays=args.overlays,
                              model_name=args.model, reference=args.reference)
    except (ConfigError, DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"scored {report.images} image(s), {report.patches} patch(es) → "
          f"{Path(args.out) / 'scores.csv'}")
    if report.metrics is not None:
        keys = ("patch_auroc", "patch_auroc_fabric_matched", "pixel_auroc", "aupro", "f1_max")
        print("  " + ", ".join(f"{k} {report.metrics[k]:.4f}" for k in keys
                               if k in report.metrics))
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s) (all in summary.json):")
        print("\n".join(skip_lines(report.to_dict()["skipped"])))
    if report.images == 0:
        print("error: no image could be scored (see the skipped files above)", file=sys.stderr)
        return 2
    if report.nonfinite:
        print(f"error: {report.nonfinite} of {report.patches} patch score(s) are NaN or "
              "infinite; they are marked reject, never accept (the model cannot tell: check "
              "its weights)", file=sys.stderr)
        return 1
    return 0


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; allowed: an integer >= {low}")
        return value
    return parse


def register(subparsers: argparse._SubParsersAction,
             load_model: ModelLoader | None = None) -> argparse.ArgumentParser:
    loader = load_model or load_local_model
    parser = subparsers.add_parser(
        "score", help="score a data set or image files with a trained model",
        description="Writes scores.csv (one row per patch), metrics.json (when labels exist), "
                    "heat-map overlays and summary.json to --out.")
    parser.add_argument("--model", required=True,
                        help="model directory (vae.save) or, with tracking, a models:/ or runs:/ URI")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--data-root", help="data set root to score, labelled from its masks")
    inputs.add_argument("--images", nargs="+", metavar="FILE", help="image files, no labels")
    parser.add_argument("--format", choices=DATA_FORMATS, default="aitex",
                        help="layout of --data-root (default: aitex)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--stride", type=_int_at_least(1), default=None,
                        help="patch stride in pixels (default: the patch size)")
    parser.add_argument("--resize", type=_int_at_least(0), default=None, metavar="N",
                        help="resize every image to NxN before cutting patches; 0: native "
                             "(default: as the model's training data, model.input_resize)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=64)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    parser.add_argument("--reference", choices=REFERENCES, default=None,
                        help="strip_fabric: score each patch against the other patches of its "
                             "own image (a strip), its worst window on fabric above its median, "
                             "the fabric found along the strip (the searched one); strip_peak: "
                             "the fabric found from each patch's border (format 5); strip: "
                             "format 4's smoothed max; none: each "
                             "patch on its own (default: as the model was validated, its "
                             "score.reference; another choice is not calibrated: pair it with "
                             "--threshold)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="decision threshold (default: the model's calibration.json)")
    parser.add_argument("--overlays", type=_int_at_least(0), default=20,
                        help="heat-map PNGs to write: defective strips first, then the "
                             "highest-scoring (default: 20; 0: none)")
    if load_model is not None:  # a URI-aware loader (tracking) also reads the store's URI
        parser.add_argument("--tracking-uri", default=None,
                            help="MLflow store for models:/ and runs:/ URIs (default "
                                 "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.set_defaults(func=lambda args: run_score(args, loader))
    return parser
