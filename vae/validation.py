"""One validation pass: the loss terms, ``val/mse`` and every scorer's scores from one forward
pass per patch (one encode, one decode of the posterior mean), in fp32 on every device, in the
batches ``score_patches`` forms (so a pulled model reproduces the scores bit for bit).

``val/loss`` is the training loss with z at the posterior mean (the reconstruction the scores
see) plus the closed-form KL: deterministic, and free once the scores' pass has run. A sampled-z
ELBO estimate would need a second decode per patch and adds only sampling noise to a figure
nothing ranks by (trials are ranked by ``val/objective``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vae import keys
from vae.config import ScoreConfig, VAEConfig
from vae.losses import vae_loss
from vae.model import VAEOutput
from vae.score.maps import Pass, iter_passes
from vae.score.reference import StripLayout
from vae.score.scorers import Scoring


def validation_pass(model: nn.Module, images_uint8: np.ndarray | torch.Tensor,
                    scorers: dict[str, ScoreConfig], normal: np.ndarray, *,
                    layout: StripLayout | None = None, batch_size: int = 64
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(loss metrics over the ``normal`` patches, (N,) float32 scores per scorer in input order).

    ``normal``: a bool mask (N,) of the defect-free patches, whose ``val/loss``, ``val/kl`` and
    ``val/mse`` (per-pixel MSE in the [0, 1] scale) are computed; the others are only scored
    (``vae.score.scorers.score_candidates`` scores without losses). ``layout``: where the
    patches lie in their strips, for reference scorers. Runs on the model's device; the
    model's mode is restored.
    """
    images = torch.as_tensor(images_uint8)
    count = images.shape[0]
    normal = np.asarray(normal, dtype=bool)
    if normal.shape != (count,):
        raise ValueError(f"normal must be a bool mask of shape ({count},), got {normal.shape}")
    if not normal.any():
        raise ValueError("no normal patches to compute validation losses on (normal is all False)")
    config = model.config
    # Batches in input order, as score_patches forms them: kernels may round differently for
    # another batch composition, and a pulled model must reproduce these scores bit for bit.
    # Everything stays on the device until the end: the host reads it once per scorer and once
    # for the loss sums, not per batch.
    scoring = Scoring(scorers, layout)
    sums = None  # (loss, kl, squared error) summed over the normal patches
    start = 0
    for batch in iter_passes(model, images, batch_size=batch_size):
        size = batch.x.shape[0]
        x_unit, recon_unit = batch.unit(config.model.input_range)
        scoring.add(x_unit, recon_unit)
        rows = np.flatnonzero(normal[start:start + size])
        start += size
        if rows.size == 0:
            continue
        step = _normal_sums(batch, x_unit, recon_unit, rows, config)
        sums = step if sums is None else sums + step
    scores = scoring.scores()
    normal_count = int(np.count_nonzero(normal))
    loss, kl, squared_error = sums.tolist()
    pixels = normal_count * int(np.prod(images.shape[1:]))
    return ({keys.VAL_LOSS: loss / normal_count, keys.VAL_KL: kl / normal_count,
             keys.VAL_MSE: squared_error / pixels}, scores)


def _normal_sums(batch: Pass, x_unit: torch.Tensor, recon_unit: torch.Tensor, rows: np.ndarray,
                 config: VAEConfig) -> torch.Tensor:
    """(loss, kl, squared error) summed over the ``rows`` of the batch (its normal patches)."""
    size = batch.x.shape[0]
    if rows.size < size:
        index = torch.as_tensor(rows).to(batch.x.device, non_blocking=True)
        tiles = batch.posterior.mean.shape[0] // size  # a tiled model: T posteriors per patch
        tile_rows = (index[:, None] * tiles + torch.arange(tiles, device=index.device)).flatten()
        posterior = batch.posterior.select(tile_rows)
        logits = None if batch.logits is None else batch.logits[index]
        batch = Pass(batch.x[index], batch.recon[index], logits, posterior)
        x_unit, recon_unit = x_unit[index], recon_unit[index]
    output = VAEOutput(batch.recon, batch.logits, batch.posterior, batch.posterior.mean)
    terms = vae_loss(output, batch.x, config.loss)
    count = int(rows.size)
    return torch.stack([terms["loss"] * count, terms["kl"] * count,
                        (recon_unit - x_unit).square().sum()]).double()
