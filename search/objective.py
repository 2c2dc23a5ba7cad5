"""What ranks trials (``--objective``): the synthetic-defect figure, the real one, or both.

- ``synthetic``: ``val/auroc`` — held-out normal patches against the same patches with
  synthetic defects. Needs no labels; how faithfully it ranks trials depends on the data
  (``search.fidelity`` measures it whenever real labels exist).
- ``real``: ``val/real_auroc`` — real defects of held-out defective strips against the clean
  patches of the same strips (``vae.data.splits``' ``real_val``), i.e. fabric-matched AUROC.
- ``blend``: the mean of the two. The real set is small (a quarter of the defective strips:
  about 20 anomalous patches on the AITEX dev split), so its AUROC is noisy; the synthetic
  figure is steadier but can be wrong about which model finds real defects.

``auto`` (the default) is ``real`` when the real validation split holds at least
``MIN_REAL_DEFECTS`` anomalous patches, ``blend`` when it holds fewer (a handful of positives
makes an AUROC too noisy to rank by alone), and ``synthetic`` without labels. Measured on the
AITEX dev split (``bench/proxy_fidelity.py``, 10 trials; README "Choosing the objective"): the
champion by ``real`` was the trial that scored best on the held-out test strips (ratio 1.00,
test fabric-matched 0.821), by ``blend`` 0.94 and by ``synthetic`` 0.96 of it, and the synthetic
figure's ranking of the trials was uncorrelated with their test figures (Spearman -0.02). Whatever is chosen is
reported every epoch as ``val/objective`` (``vae.keys.OBJECTIVE``), which ASHA, the searcher,
checkpoint retention and the champion all use.
"""

from __future__ import annotations

import math

from vae import keys

OBJECTIVES = ("synthetic", "real", "blend")
CHOICES = ("auto", *OBJECTIVES)
DEFAULT_WITH_LABELS = "real"
MIN_REAL_DEFECTS = 20  # anomalous real-validation patches below which auto blends


class ObjectiveError(ValueError):
    """An objective that this data set cannot provide; the message says why and what can."""


def resolve(requested: str, real_defects: int) -> str:
    """The objective a search with ``requested`` (one of ``CHOICES``, as ``SearchSettings``
    checks) runs when the real validation split holds ``real_defects`` anomalous patches (0:
    no labels to validate on)."""
    if requested == "auto":
        if not real_defects:
            return "synthetic"
        return DEFAULT_WITH_LABELS if real_defects >= MIN_REAL_DEFECTS else "blend"
    if requested != "synthetic" and not real_defects:
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
