"""The registered model's code: an MLflow pyfunc that turns images into anomaly scores.

Logged with MLflow's "models from code" (``python_model`` given as this file's path), so MLflow
stores this source file instead of a cloudpickled object: nothing is unpickled on load. Weights
come from ``model.safetensors`` + ``config.json`` through ``vae.load``; ``calibration.json``
(when present) gives accept/reject decisions. The ``vae`` package travels with the model as
code, so a fresh environment with the pip requirements can load and serve it.

``predict`` input, as the model's signature says (MLflow enforces it): uint8 images
``(N, C, H, W)`` with the model's channels and patch side; JSON from ``mlflow models serve`` is
parsed to uint8 by that schema. A model trained on resized images (``model.input_resize``, e.g.
a folder data set) takes images of any one size and resizes them as its training data was; an
image larger than one patch then scores as its highest patch (rejected when any patch is), as
``aitexvae score`` cuts it. Output: ``(N,)`` float32 anomaly scores, as ``aitexvae score`` gives them.
A model validated with the strip as its own reference (``score.reference`` ``"strip_fabric"``,
``"strip_peak"`` or ``"strip"``) scores each patch against the others: the patches of one call
are taken as one strip's non-overlapping patches, side by side in the order sent (send a strip
per call, left to right, at least two patches: the order places the strip's ends, where
``"strip_fabric"`` looks for the fabric's edge), and an image of a
resized model against the other patches cut from it that share no pixel with it (refused,
naming the patch, when one has none).
With ``params={"decisions": True}`` a dict adds ``decision`` (True = reject) and ``threshold``.
Called directly (``unwrap_python_model().predict``, no schema), it also takes ``(N, H, W)``,
other integer types within 0..255 and floats in [0, 1], and refuses anything else by name.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

WEIGHTS_ARTIFACT = "weights"  # same as tracking.settings.WEIGHTS_ARTIFACT (this file stands alone)


def to_uint8_images(images: object, in_channels: int) -> np.ndarray:
    """Validate and convert model input to uint8 ``(N, C, H, W)``; errors name what is allowed."""
    if hasattr(images, "to_numpy"):  # a pandas DataFrame of one image-array column
        images = np.stack(list(images.iloc[:, 0])) if images.shape[1] == 1 else images.to_numpy()
    array = np.asarray(images)
    if array.ndim == 3:  # (N, H, W): gray patches; a colour model then names the mismatch
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min(initial=0.0) < 0 or \
                array.max(initial=0.0) > 1:
            raise ValueError("float images must be finite and in [0, 1]; got values in "
                             f"[{array.min():.4g}, {array.max():.4g}]")
        return np.round(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("integer images must be in 0..255; got values in "
                             f"[{array.min()}, {array.max()}]")
        return array.astype(np.uint8, copy=False)
    raise TypeError(f"images must be an integer or float array, got dtype {array.dtype}")


class AitexVAEScorer(PythonModel):
    """Anomaly scores of fabric patches from the champion VAE."""

    def load_context(self, context) -> None:
        import torch

        import vae
        from vae.score import CALIBRATION_FILE, Calibration

        folder = Path(context.artifacts[WEIGHTS_ARTIFACT])
        # In the layout scoring uses (vae.score.maps.scoring_layout) for the model's life:
        # converted once here, not on every request.
        self.model = vae.load(folder).to(memory_format=torch.channels_last)
        calibration = folder / CALIBRATION_FILE
        self.calibration = Calibration.from_json(calibration) if calibration.is_file() else None

    def predict(self, context, model_input, params=None):
        from vae.score import score_patches
        from vae.score.reference import strip_scores

        config = self.model.config.model
        images = to_uint8_images(model_input, config.in_channels)
        if config.input_resize:
            scores = self._score_resized(images, config.input_resize, config.image_size)
        elif (reference := self.model.config.score.reference) != "none":
            if len(images) < 2:
                raise ValueError(f"this model scores each patch against the other patches of "
                                 f"its strip (score.reference={reference!r}): send one strip's "
                                 f"patches per call, at least 2; got {len(images)}")
            scores = strip_scores(self.model, images, reference=reference)[0]
        else:
            scores, _ = score_patches(self.model, images, keep_maps=False)
        if not (params or {}).get("decisions"):
            return scores
        if self.calibration is None:
            raise ValueError("this model was registered without calibration.json; decisions "
                             "need a threshold")
        return {"score": scores.tolist(), "decision": self.calibration.decide(scores).tolist(),
                "threshold": self.calibration.threshold}

    def _score_resized(self, images: np.ndarray, resize: int, patch_size: int) -> np.ndarray:
        from vae.data.patches import cut
        from vae.data.resize import resize_image
        from vae.score import score_patches
        from vae.score.reference import strip_scores

        if not len(images):
            return np.zeros(0, np.float32)
        resized = np.stack([resize_image(image, resize) for image in images])
        reference = self.model.config.score.reference
        referenced = reference != "none"
        if resize == patch_size and not referenced:
            return score_patches(self.model, resized, keep_maps=False)[0]
        if resize == patch_size:
            raise ValueError("this model scores each patch against the other patches of its "
                             f"image (score.reference={reference!r}), but it cuts a {resize}² "
                             "image into one patch")
        no_mask = np.zeros((resize, resize), dtype=bool)
        cuts = [cut(image, no_mask, patch_size, patch_size) for image in resized]
        if referenced:  # each image is its own strip; its edge-aligned last patches overlap
            return np.array([strip_scores(self.model, part, np.stack([xs, ys], 1),
                                          reference=reference)[0].max()
                             for part, _, xs, ys in cuts], np.float32)
        scores, _ = score_patches(self.model, np.concatenate([c[0] for c in cuts]),
                                  keep_maps=False)
        return scores.reshape(len(images), -1).max(axis=1)


mlflow.models.set_model(AitexVAEScorer())
