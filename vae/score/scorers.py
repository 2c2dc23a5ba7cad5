"""The built-in scorer set a trial compares every validation pass (``score.select = "best"``).

All scorers read the same reconstructions, so comparing them costs map arithmetic, not forward
passes. The set is small and fixed on purpose: the best of K scorers on one validation split is
optimistically biased, and the trial logs K (``val/scorers_compared``) so that bias stays
visible. Each entry keeps the trial's ``topk_fraction`` and fills in map, sigma, reduction and
normalisation; which scorer won is recorded in the metrics and in the checkpoint's config.

``STRIP_REFERENCE`` (``score.reference = "strip_fabric"``) is the one candidate that is not per
patch: each patch's signed residual against the other patches of its strip
(``vae.score.reference``). It needs the patches' ``StripLayout`` and costs a nearest-window
search per strip after the pass (about 1 s per 16-patch strip of 256² on 2 CPU cores), so it
is compared only where a layout is given. On the AITEX dev split's held-out test strips the
strip reference lifted one champion's fabric-matched AUROC from 0.722 to 0.832 (``"strip"``,
``bench/real_quality.py``), and ``"strip_peak"`` lifts another's from 0.815 (``"strip"``) to
0.880, and a third's from 0.822 to 0.900 once it leaves out the background; ``"strip_fabric"``,
which finds the background along the whole strip, takes the DRA figure past 0.95 (README). On
the synthetic demo fabric ``"strip"`` did worse than per-patch scorers (0.942 → 0.847), while
``"strip_peak"`` won the default demo search (``make demo``: 0.990). Which way a data set goes
is what the validation pass measures. ``"strip"`` and ``"strip_peak"`` (model formats 4, 5)
are no longer candidates: each would add to the selection bias for a scorer that its successor
beat on every residual measured; a model that chose one still scores with it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vae.config import ScoreConfig
from vae.score.maps import iter_reconstructions, reduce_maps, residual_maps
from vae.score.reference import StripLayout, clipped_columns, layout_scores, signed_residual

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
# score.reference → the scorer's name; "strip" was the candidate of model format 4.
REFERENCE_NAMES = {"strip": "strip_reference", "strip_peak": "strip_reference/peak",
                   "strip_fabric": "strip_reference/fabric"}
CANDIDATE_REFERENCE = "strip_fabric"
STRIP_REFERENCE = REFERENCE_NAMES[CANDIDATE_REFERENCE]
NAMES = (*SCORERS, STRIP_REFERENCE)  # every candidate, in the order val/scorer_index counts


def candidates(score_config: ScoreConfig, *, reference: bool = True) -> dict[str, ScoreConfig]:
    """Scorers to compare: the built-in set for ``select="best"`` (with ``STRIP_REFERENCE``
    unless ``reference`` is false: patches without a strip layout) and ``"best_per_patch"``
    (without it), else the configured one."""
    if score_config.select == "fixed":
        return {scorer_name(score_config): score_config}
    per_patch = {name: replace(score_config, map=m, smooth_sigma=sigma, reduction=reduction,
                               normalize=normalize, reference="none")
                 for name, (m, sigma, reduction, normalize) in SCORERS.items()}
    if not reference or score_config.select == "best_per_patch":
        return per_patch
    # The per-patch fields are unused by the reference; the defaults keep its config plain.
    return {**per_patch, STRIP_REFERENCE: ScoreConfig(topk_fraction=score_config.topk_fraction,
                                                      select=score_config.select,
                                                      reference=CANDIDATE_REFERENCE)}


def scorer_name(score_config: ScoreConfig) -> str:
    """The set's name for this scorer, or a descriptive one for a scorer outside the set."""
    if score_config.reference != "none":
        return REFERENCE_NAMES[score_config.reference]
    key = (score_config.map, score_config.smooth_sigma, score_config.reduction,
           score_config.normalize)
    for name, entry in SCORERS.items():
        if entry == key:
            return name
    suffix = "" if score_config.normalize == "none" else f"/{score_config.normalize}"
    return f"{score_config.map}(sigma={score_config.smooth_sigma:g})/{score_config.reduction}" \
        + suffix


class Scoring:
    """Every scorer of ``configs`` over one pass of batches, in input order: per-patch scorers
    batch by batch (``add``), strip references from the collected residuals at the end
    (``scores``). ``layout`` places the patches in their strips, which reference scorers
    need."""

    def __init__(self, configs: dict[str, ScoreConfig], layout: StripLayout | None = None
                 ) -> None:
        self.layout = layout
        self.per_patch = {n: c for n, c in configs.items() if c.reference == "none"}
        self.referenced = {n: c.reference for n, c in configs.items() if c.reference != "none"}
        if self.referenced and layout is None:
            first = next(iter(self.referenced))
            raise ValueError(f"scorer {first!r} compares each patch with the other "
                             "patches of its strip and needs their StripLayout; without one, "
                             "use per-patch scorers only (candidates(..., reference=False))")
        self.parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.per_patch}
        self.residuals: list[torch.Tensor] = []
        self.clipped: list[torch.Tensor] = []

    def add(self, x_unit: torch.Tensor, recon_unit: torch.Tensor) -> None:
        for name, config in self.per_patch.items():
            maps = residual_maps(x_unit, recon_unit, config)
            self.parts[name].append(reduce_maps(maps, config).float())
        if self.referenced:
            self.residuals.append(signed_residual(x_unit, recon_unit))
            self.clipped.append(clipped_columns(x_unit))

    def scores(self) -> dict[str, np.ndarray]:
        """(N,) float32 scores per scorer (a reference's NaN where a strip cannot have one)."""
        out = {name: torch.cat(chunks).cpu().numpy() if chunks else np.zeros(0, np.float32)
               for name, chunks in self.parts.items()}
        if self.referenced:
            residuals, clipped = torch.cat(self.residuals), torch.cat(self.clipped)
            out.update({name: layout_scores(residuals, self.layout, reference=reference,
                                            clipped=clipped)
                        for name, reference in self.referenced.items()})
        return out


def score_candidates(model: torch.nn.Module, images_uint8: np.ndarray | torch.Tensor,
                     configs: dict[str, ScoreConfig], *, layout: StripLayout | None = None,
                     batch_size: int = 64) -> dict[str, np.ndarray]:
    """(N,) float32 scores per scorer from one reconstruction pass over ``images_uint8``
    (placed in their strips by ``layout``, which reference scorers need)."""
    scoring = Scoring(configs, layout)
    for x_unit, recon_unit in iter_reconstructions(model, images_uint8, batch_size=batch_size):
        scoring.add(x_unit, recon_unit)
    return scoring.scores()


def pick_best(aurocs: dict[str, float]) -> str:
    """The scorer with the highest finite AUROC; ties go to the earlier entry (the simpler)."""
    finite = {name: value for name, value in aurocs.items() if np.isfinite(value)}
    if not finite:
        return next(iter(aurocs))
    return max(finite, key=lambda name: (finite[name], -list(aurocs).index(name)))
