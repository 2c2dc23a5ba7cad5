"""Scoring: anomaly maps, patch scores, stitching, metrics and calibration — one implementation.

Used by the trainable (``val/auroc``), by tracking (probe pictures, calibration) and by
``aitexvae score``. Pure PyTorch/NumPy/scikit-learn: no Ray, no MLflow.
"""

from vae.score.calibration import CALIBRATION_FILE, Calibration
from vae.score.maps import anomaly_maps, patch_scores, score_patches
from vae.score.metrics import aupro, evaluate_scores, f1_max, image_auroc, pixel_auroc
from vae.score.pixel_metrics import PixelSample
from vae.score.stitch import stitch

__all__ = ["CALIBRATION_FILE", "Calibration", "PixelSample", "anomaly_maps", "aupro",
           "evaluate_scores", "f1_max", "image_auroc", "patch_scores", "pixel_auroc",
           "score_patches", "stitch"]
