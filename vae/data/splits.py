"""Split a catalog of patches into train / val / test **by strip** (no patch of a strip leaks).

Protocol (deterministic by ``seed``), mirroring published AITEX results:
- each fabric's defect-free strips are shuffled and split 3:1 into train and test
  (``test_fraction=0.25``, rounded half up, at least one train strip per fabric);
- ``val_fraction`` (0.2) of each fabric's train strips is held out for validation;
- train = patches of the train strips (all defect-free);
- val = patches of the held-out strips (label 0) plus the *same* patches with synthetic defects
  injected (label 1, ``synthetic=True``, exact masks) — ``val/auroc``. With
  ``val_defects="matched"`` their areas and contrasts follow the real defects of ``real_val``
  (``vae.data.defects.measure``); without real defects, the built-in ones;
- real_val = every patch of ``real_val_fraction`` (0.25) of each fabric's defective strips
  (rounded half up, at most all but one per fabric, drawn from a seed stream of its own so the
  other splits do not move), labelled from their masks: real defects against the clean patches
  of the same strips (fabric-matched), for ``val/real_auroc``. When those strips give no clean
  patch (a folder set resized to one patch per image), the held-out normal patches of ``val``
  are its negatives instead. Empty when the data set has no defective strips;
- test = patches of the test defect-free strips plus every patch of every other defective strip
  (label from its mask, so defect-free patches of a defective strip count as normal).
Folder layouts that already separate ``test/good`` keep that choice: those strips go to test and
only ``train/good`` is split into train and val.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vae.data.config import DataConfig
from vae.data.defects import inject, measure
from vae.data.patches import positions
from vae.data.patchset import PatchSet
from vae.data.summary import DataSummary

logger = logging.getLogger(__name__)
REAL_VAL_STREAM = 1  # seed-sequence key of the real-validation draw (see _real_val_strips)


@dataclass
class Splits:
    train: PatchSet
    val: PatchSet
    test: PatchSet
    summary: DataSummary
    real_val: PatchSet | None = None  # None or empty: the data set has no labelled defects

    @property
    def has_real_val(self) -> bool:
        """Real defects *and* normal patches to tell them from: what val/real_auroc needs."""
        return self.real_val is not None and 0 < int(self.real_val.labels.sum()) \
            < len(self.real_val)


def _round_half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def assign_strips(catalog: PatchSet, config: DataConfig) -> dict[str, list[int]]:
    """Strip indices per split; defective strips always go to test."""
    rng = np.random.default_rng(config.seed)
    roles: dict[str, list[int]] = {"train": [], "val": [], "real_val": [], "test": []}
    normal = [i for i, s in enumerate(catalog.strips) if not s.defective]
    honour_hint = any(catalog.strips[i].split_hint == "test" for i in normal)
    by_fabric: dict[str, list[int]] = {}
    for i in normal:
        if honour_hint and catalog.strips[i].split_hint == "test":
            roles["test"].append(i)
        else:
            by_fabric.setdefault(catalog.strips[i].fabric, []).append(i)
    for fabric in sorted(by_fabric):
        # Sort by id before shuffling so the split does not depend on directory listing order.
        members = sorted(by_fabric[fabric], key=lambda i: catalog.strips[i].strip)
        members = [members[k] for k in rng.permutation(len(members))]
        n_test = 0 if honour_hint else min(_round_half_up(len(members) * config.test_fraction),
                                           len(members) - 1)
        n_val = min(_round_half_up((len(members) - n_test) * config.val_fraction),
                    len(members) - n_test - 1)
        roles["test"] += members[:n_test]
        roles["val"] += members[n_test:n_test + n_val]
        roles["train"] += members[n_test + n_val:]
    defective = [i for i, s in enumerate(catalog.strips) if s.defective]
    roles["test"] += defective
    if config.real_val_fraction > 0:
        roles["real_val"] = _real_val_strips(catalog, defective, config)
        held = set(roles["real_val"])
        roles["test"] = [i for i in roles["test"] if i not in held]
    return {name: sorted(indices) for name, indices in roles.items()}


def _real_val_strips(catalog: PatchSet, defective: list[int], config: DataConfig) -> list[int]:
    # A seed stream of its own: holding out defective strips leaves train/val/test's normal
    # strips exactly where real_val_fraction=0 puts them.
    rng = np.random.default_rng([config.seed, REAL_VAL_STREAM])
    by_fabric: dict[str, list[int]] = {}
    for i in defective:
        by_fabric.setdefault(catalog.strips[i].fabric, []).append(i)
    chosen: list[int] = []
    for fabric in sorted(by_fabric):
        members = sorted(by_fabric[fabric], key=lambda i: catalog.strips[i].strip)
        members = [members[k] for k in rng.permutation(len(members))]
        count = min(_round_half_up(len(members) * config.real_val_fraction), len(members) - 1)
        chosen += members[:count]
    return chosen


def on_grid(patches: PatchSet, stride: int) -> np.ndarray:
    """Bool (N,): the patches that a cut at ``stride`` gives (its grid and edge-aligned ones)."""
    keep = np.zeros(len(patches), dtype=bool)
    size = patches.patch_size
    for index, info in enumerate(patches.strips):
        rows = patches.strip_index == index
        if not rows.any():
            continue
        height, width = info.shape
        keep[rows] = np.isin(patches.x[rows], positions(width, size, stride)) \
            & np.isin(patches.y[rows], positions(height, size, stride))
    return keep


def make_splits(catalog: PatchSet, summary: DataSummary, config: DataConfig) -> Splits:
    roles = assign_strips(catalog, config)
    sets = {name: catalog.subset(np.isin(catalog.strip_index, indices))
            for name, indices in roles.items()}
    if config.catalog_stride != config.stride:  # the catalog was cut at the training stride
        for name in ("val", "real_val", "test"):
            sets[name] = sets[name].subset(on_grid(sets[name], int(config.stride)))
    held_out, real = sets["val"], sets["real_val"]
    statistics = None
    if config.val_defects == "matched":
        anomalous = real.labels == 1
        statistics = measure(real.images[anomalous], real.masks[anomalous])
        if statistics is None:
            logger.info("data.val_defects=matched: no real defects held out to match; "
                        "validation uses the built-in synthetic defects")
        else:
            logger.info("validation defects matched to %s", statistics.describe())
    if len(held_out):
        images, masks, _ = inject(held_out.images, config.seed, config.defects_per_patch,
                                  statistics)
        defective = held_out.subset(np.arange(len(held_out)))
        defective.images, defective.masks = images, masks
        defective.labels = np.ones(len(held_out), np.int64)
        defective.synthetic = np.ones(len(held_out), bool)
        defective.defect_pixels = masks.reshape(len(masks), -1).sum(1).astype(np.int32)
        sets["val"] = PatchSet.concat([held_out, defective])
    if len(real) and not (real.labels == 0).any() and len(held_out):
        sets["real_val"] = PatchSet.concat([real, held_out])  # no clean patch of their own
    summary.splits = {name: {"strips": len(roles[name]), "patches": len(s),
                             "anomalous": int(s.labels.sum()), "synthetic": int(s.synthetic.sum())}
                      for name, s in sets.items() if name != "real_val" or len(s)}
    return Splits(train=sets["train"], val=sets["val"], test=sets["test"], summary=summary,
                  real_val=sets["real_val"])
