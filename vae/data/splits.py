"""Split a catalog of patches into train / val / test **by strip** (no patch of a strip leaks).

Protocol (deterministic by ``seed``), mirroring published AITEX results:
- each fabric's defect-free strips are shuffled and split 3:1 into train and test
  (``test_fraction=0.25``, rounded half up, at least one train strip per fabric);
- ``val_fraction`` (0.2) of each fabric's train strips is held out for validation;
- train = patches of the train strips (all defect-free);
- val = patches of the held-out strips (label 0) plus the *same* patches with synthetic defects
  injected (label 1, ``synthetic=True``, exact masks) — what the search optimises;
- test = patches of the test defect-free strips plus every patch of every defective strip (label
  from its mask, so defect-free patches of a defective strip count as normal).
Folder layouts that already separate ``test/good`` keep that choice: those strips go to test and
only ``train/good`` is split into train and val.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vae.data.config import DataConfig
from vae.data.defects import inject
from vae.data.patches import positions
from vae.data.patchset import PatchSet
from vae.data.summary import DataSummary


@dataclass
class Splits:
    train: PatchSet
    val: PatchSet
    test: PatchSet
    summary: DataSummary


def _round_half_up(value: float) -> int:
    return int(np.floor(value + 0.5))


def assign_strips(catalog: PatchSet, config: DataConfig) -> dict[str, list[int]]:
    """Strip indices per split; defective strips always go to test."""
    rng = np.random.default_rng(config.seed)
    roles: dict[str, list[int]] = {"train": [], "val": [], "test": []}
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
    roles["test"] += [i for i, s in enumerate(catalog.strips) if s.defective]
    return {name: sorted(indices) for name, indices in roles.items()}


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
        for name in ("val", "test"):
            sets[name] = sets[name].subset(on_grid(sets[name], int(config.stride)))
    held_out = sets["val"]
    if len(held_out):
        images, masks, _ = inject(held_out.images, config.seed, config.defects_per_patch)
        defective = held_out.subset(np.arange(len(held_out)))
        defective.images, defective.masks = images, masks
        defective.labels = np.ones(len(held_out), np.int64)
        defective.synthetic = np.ones(len(held_out), bool)
        defective.defect_pixels = masks.reshape(len(masks), -1).sum(1).astype(np.int32)
        sets["val"] = PatchSet.concat([held_out, defective])
    summary.splits = {name: {"strips": len(roles[name]), "patches": len(s),
                             "anomalous": int(s.labels.sum()), "synthetic": int(s.synthetic.sum())}
                      for name, s in sets.items()}
    return Splits(train=sets["train"], val=sets["val"], test=sets["test"], summary=summary)
