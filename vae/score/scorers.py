"""The built-in scorer set a trial compares every validation pass (``score.select = "best"``).

All scorers read the same reconstructions, so comparing them costs map arithmetic, not forward
passes. The set is small and fixed on purpose: the best of K scorers on one validation split is
optimistically biased, and the trial logs K (``val/scorers_compared``) so that bias stays
visible. Each entry keeps the trial's ``topk_fraction`` and fills in map, sigma, reduction and
normalisation; which scorer won is recorded in the metrics and in the checkpoint's config.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vae.config import ScoreConfig
from vae.score.maps import iter_reconstructions, reduce_maps, residual_maps

# name → (map, smooth_sigma, reduction, normalize). The first is the fixed default's scorer.
SCORERS: dict[str, tuple[str, float, str, str]] = {
    "l2_smooth/topk_mean": ("l2_smooth", 2.0, "topk_mean", "none"),
    "l2_smooth/max": ("l2_smooth", 2.0, "max", "none"),
    "signed_smooth/max": ("signed_smooth", 2.0, "max", "none"),
    "signed_smooth/max/image": ("signed_smooth", 2.0, "max", "image"),
    "signed_smooth4/max/image": ("signed_smooth", 4.0, "max", "image"),
    "ssim/max": ("ssim", 2.0, "max", "none"),
    "msgms/max": ("msgms", 2.0, "max", "none"),
    "msgms/max/image": ("msgms", 2.0, "max", "image"),
}


def candidates(score_config: ScoreConfig) -> dict[str, ScoreConfig]:
    """Scorers to compare: the built-in set for ``select="best"``, else the configured one."""
    if score_config.select == "fixed":
        return {scorer_name(score_config): score_config}
    return {name: replace(score_config, map=m, smooth_sigma=sigma, reduction=reduction,
                          normalize=normalize)
            for name, (m, sigma, reduction, normalize) in SCORERS.items()}


def scorer_name(score_config: ScoreConfig) -> str:
    """The set's name for this scorer, or a descriptive one for a scorer outside the set."""
    key = (score_config.map, score_config.smooth_sigma, score_config.reduction,
           score_config.normalize)
    for name, entry in SCORERS.items():
        if entry == key:
            return name
    suffix = "" if score_config.normalize == "none" else f"/{score_config.normalize}"
    return f"{score_config.map}(sigma={score_config.smooth_sigma:g})/{score_config.reduction}" \
        + suffix


def score_all(x_unit: torch.Tensor, recon_unit: torch.Tensor,
              configs: dict[str, ScoreConfig]) -> dict[str, torch.Tensor]:
    """(B,) patch scores of every scorer in ``configs`` from one batch of reconstructions."""
    return {name: reduce_maps(residual_maps(x_unit, recon_unit, config), config)
            for name, config in configs.items()}


def score_candidates(model: torch.nn.Module, images_uint8: np.ndarray | torch.Tensor,
                     configs: dict[str, ScoreConfig], *, batch_size: int = 64
                     ) -> dict[str, np.ndarray]:
    """(N,) float32 scores per scorer from one reconstruction pass over ``images_uint8``."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in configs}
    for x_unit, recon_unit in iter_reconstructions(model, images_uint8, batch_size=batch_size):
        for name, scores in score_all(x_unit, recon_unit, configs).items():
            parts[name].append(scores)
    return {name: torch.cat(chunks).float().cpu().numpy() if chunks else np.zeros(0, np.float32)
            for name, chunks in parts.items()}


def pick_best(aurocs: dict[str, float]) -> str:
    """The scorer with the highest finite AUROC; ties go to the earlier entry (the simpler)."""
    finite = {name: value for name, value in aurocs.items() if np.isfinite(value)}
    if not finite:
        return next(iter(aurocs))
    return max(finite, key=lambda name: (finite[name], -list(aurocs).index(name)))
