"""One validation pass: the loss terms, ``val/mse`` and every scorer's scores from one forward
pass per patch (one encode, one decode of the posterior mean), in fp32 on every device.

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
from vae.config import ScoreConfig
from vae.losses import vae_loss
from vae.model import VAEOutput
from vae.score.maps import iter_passes
from vae.score.scorers import score_all


def validation_pass(model: nn.Module, images_uint8: np.ndarray | torch.Tensor,
                    scorers: dict[str, ScoreConfig], normal: np.ndarray, *,
                    batch_size: int = 64) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(loss metrics over the ``normal`` patches, (N,) float32 scores per scorer in input order).

    ``normal``: a bool mask (N,) of the defect-free patches, whose ``val/loss``, ``val/kl`` and
    ``val/mse`` (per-pixel MSE in the [0, 1] scale) are computed; the others are only scored
    (``vae.score.scorers.score_candidates`` scores without losses). Runs on the model's device;
    the model's mode is restored.
    """
    images = torch.as_tensor(images_uint8)
    count = images.shape[0]
    order = np.arange(count)
    normal = np.asarray(normal, dtype=bool)
    if normal.shape != (count,):
        raise ValueError(f"normal must be a bool mask of shape ({count},), got {normal.shape}")
    if not normal.any():
        raise ValueError("no normal patches to compute validation losses on (normal is all False)")
    groups = [order[normal], order[~normal]]
    config = model.config
    # Everything stays on the device until the end: one host sync per pass, not per batch.
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in scorers}
    sums = None  # (loss, kl, squared error) summed over the normal patches
    for group_index, rows in enumerate(groups):
        if rows.size == 0:
            continue
        with_losses = group_index == 0
        for batch in iter_passes(model, images[torch.as_tensor(rows)], batch_size=batch_size):
            x_unit, recon_unit = batch.unit(config.model.input_range)
            for name, values in score_all(x_unit, recon_unit, scorers).items():
                parts[name].append(values.float())
            if with_losses:
                output = VAEOutput(batch.recon, batch.logits, batch.posterior,
                                   batch.posterior.mean)
                terms = vae_loss(output, batch.x, config.loss)
                size = batch.x.shape[0]
                step = torch.stack([terms["loss"] * size, terms["kl"] * size,
                                    (recon_unit - x_unit).square().sum()]).double()
                sums = step if sums is None else sums + step
    placement = np.concatenate(groups)  # row i of the concatenated scores is patch placement[i]
    scores = {}
    for name, chunks in parts.items():
        values = np.empty(count, np.float32)
        values[placement] = torch.cat(chunks).cpu().numpy() if chunks else np.zeros(0)
        scores[name] = values
    normal_count = int(np.count_nonzero(normal))
    loss, kl, squared_error = sums.tolist()
    pixels = normal_count * int(np.prod(images.shape[1:]))
    return ({keys.VAL_LOSS: loss / normal_count, keys.VAL_KL: kl / normal_count,
             keys.VAL_MSE: squared_error / pixels}, scores)
