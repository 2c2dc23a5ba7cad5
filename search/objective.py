"""What ranks trials (``--objective``): the synthetic-defect figure, the real one, or both.

- ``synthetic``: ``val/auroc`` — held-out normal patches against the same patches with
  synthetic defects. Needs no labels; how faithfully it ranks trials depends on the data
  (``search.fidelity`` measures it whenever real labels exist).
- ``real``: ``val/real_auroc`` — real defects of held-out defective strips against the clean
  patches of the same strips (``vae.data.splits``' ``real_val``), i.e. fabric-matched AUROC.
- ``blend``: the mean of the two. The real set is small (a quarter of the defective strips:
  about 20 anomalous patches on the AITEX dev split), so its AUROC is noisy; the synthetic
  figure is steadier but can be wrong about which model finds real defects.

``auto`` (the default) is ``DEFAULT_WITH_LABELS`` when the data has labelled defects, else
``synthetic``; see the README for the measurement behind the choice. Whatever is chosen is
reported every epoch as ``val/objective`` (``vae.keys.OBJECTIVE``), which ASHA, the searcher,
checkpoint retention and the champion all use.
"""

from __future__ import annotations

import math

from vae import keys

OBJECTIVES = ("synthetic", "real", "blend")
CHOICES = ("auto", *OBJECTIVES)
DEFAULT_WITH_LABELS = "blend"


class ObjectiveError(ValueError):
    """An objective that this data set cannot provide; the message says why and what can."""


def resolve(requested: str, has_real_labels: bool) -> str:
    """The objective a search with ``requested`` (one of ``CHOICES``, as ``SearchSettings``
    checks) runs on data with or without real labels."""
    if requested == "auto":
        return DEFAULT_WITH_LABELS if has_real_labels else "synthetic"
    if requested != "synthetic" and not has_real_labels:
        raise ObjectiveError(
            f"--objective {requested} needs labelled defects to validate on, and this data set "
            "has none held out (no defective strips with masks, or data.real_val_fraction=0); "
            "use --objective synthetic")
    return requested


def figures(objective: str) -> tuple[str, ...]:
    """The metric keys ``val/objective`` is made of under ``objective``."""
    return {"synthetic": (keys.VAL_AUROC,), "real": (keys.VAL_REAL_AUROC,),
            "blend": (keys.VAL_AUROC, keys.VAL_REAL_AUROC)}[objective]


def combine(objective: str, synthetic: float, real: float) -> float:
    """The ``val/objective`` value of one scorer/epoch (NaN when what it needs is NaN)."""
    if objective == "synthetic":
        return synthetic
    if objective == "real":
        return real
    if objective == "blend":
        return 0.5 * (synthetic + real) if math.isfinite(real) else math.nan
    raise ObjectiveError(f"unknown objective {objective!r}; choose one of {list(OBJECTIVES)}")
