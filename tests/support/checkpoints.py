"""Real trial checkpoints for tracking tests, written by ``vae.checkpoint.write`` as the
trainable writes them, with ``vae.score`` scores of the validation patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vae import checkpoint
from vae.config import VAEConfig
from vae.model import AitexVAE, build_model
from vae.score import score_patches

IMAGE_SIZE = 32


def tiny_config(**overrides: object) -> VAEConfig:
    base = {"model.image_size": IMAGE_SIZE, "model.latent_dim": 4, "train.num_epochs": 3}
    return VAEConfig().with_overrides({**base, **overrides})


def validation_set(normal: int = 6, defect: int = 6, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 32, 32) striped 'fabric' patches; the defect ones carry a dark blob."""
    rng = np.random.default_rng(seed)
    rows = np.arange(IMAGE_SIZE)
    weave = (128 + 60 * np.sin(rows[:, None] / 2.0) * np.cos(rows[None, :] / 3.0))
    images = np.clip(weave[None] + rng.normal(0, 12, (normal + defect, IMAGE_SIZE, IMAGE_SIZE)),
                     0, 255).astype(np.uint8)[:, None]
    images[normal:, :, 10:20, 12:22] = 10
    labels = np.array([0] * normal + [1] * defect)
    return images, labels


def make_model(config: VAEConfig, seed: int) -> AitexVAE:
    torch.manual_seed(seed)
    return build_model(config).eval()


def write_checkpoint(directory: Path, model: AitexVAE, epoch: int, metrics: dict[str, float],
                     val_images: np.ndarray) -> Path:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scores, _ = score_patches(model, val_images, keep_maps=False)
    return checkpoint.write(directory, model, optimizer, epoch, metrics, scores)


def outputs(model: AitexVAE, images: np.ndarray) -> np.ndarray:
    """Deterministic reconstructions (posterior mean) of uint8 images, as float32."""
    from vae.pixels import to_model_input

    with torch.inference_mode():
        x = to_model_input(images, model.config.model.input_range)
        return model.eval().reconstruct(x).float().numpy()
