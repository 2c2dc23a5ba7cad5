"""``PatchSet``: patches as uint8 arrays with pixel masks, labels and where each came from.

Per-patch metadata is stored as arrays (``x``, ``y``, ``synthetic``, ``strip_index``) plus one
``StripInfo`` record per source strip; ``file``, ``strip``, ``fabric`` and ``defect_code`` are
per-patch views of those records, and ``strip_shape`` gives a strip's (H, W) to stitch maps back.
Everything is plain NumPy, so a ``PatchSet`` pickles cheaply into Ray's object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class StripInfo:
    """One source image (an AITEX strip): identity, labels and size."""

    strip: str  # unique id: the image's path relative to the root, without suffix
    file: str  # image path relative to the root (posix)
    fabric: str
    defect_code: str  # "000" for defect-free strips (AITEX); the defect type for folders
    defective: bool
    shape: tuple[int, int]  # (H, W) of the strip
    mask_files: tuple[str, ...] = ()
    split_hint: str | None = None  # folder layout: "train" / "test" where the user decided


@dataclass
class PatchSet:
    """N patches of one split; index with ``subset``; ``len()`` is N."""

    images: np.ndarray  # uint8 (N, C, P, P)
    masks: np.ndarray  # bool (N, P, P): defect pixels
    labels: np.ndarray  # int64 (N,): 1 = anomalous
    x: np.ndarray  # int32 (N,): left edge of the patch in its strip
    y: np.ndarray  # int32 (N,): top edge
    strip_index: np.ndarray  # int32 (N,): index into ``strips``
    synthetic: np.ndarray  # bool (N,): a synthetic defect was injected
    strips: tuple[StripInfo, ...] = field(default_factory=tuple)
    defect_pixels: np.ndarray | None = None  # int32 (N,): mask pixels per patch

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.defect_pixels is None:
            self.defect_pixels = self.masks.sum(axis=(1, 2), dtype=np.int32)
        for name in ("masks", "labels", "x", "y", "strip_index", "synthetic", "defect_pixels"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PatchSet.{name} has {len(getattr(self, name))} rows, "
                                 f"images has {n}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def patch_size(self) -> int:
        return int(self.images.shape[-1])

    def _per_patch(self, attribute: str) -> np.ndarray:
        values = np.array([getattr(s, attribute) for s in self.strips] or [""], dtype=str)
        return values[self.strip_index] if len(self) else np.array([], dtype=str)

    @property
    def strip(self) -> np.ndarray:
        return self._per_patch("strip")

    @property
    def file(self) -> np.ndarray:
        return self._per_patch("file")

    @property
    def fabric(self) -> np.ndarray:
        return self._per_patch("fabric")

    @property
    def defect_code(self) -> np.ndarray:
        return self._per_patch("defect_code")

    def strip_shape(self, strip: str) -> tuple[int, int]:
        for info in self.strips:
            if info.strip == strip:
                return info.shape
        raise KeyError(f"unknown strip {strip!r}")

    def strip_ids(self) -> list[str]:
        """The distinct strips this set's patches come from, in first-seen order."""
        seen = dict.fromkeys(self.strip_index.tolist())
        return [self.strips[i].strip for i in seen]

    def subset(self, indices: np.ndarray | list[int]) -> PatchSet:
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return PatchSet(images=self.images[idx], masks=self.masks[idx], labels=self.labels[idx],
                        x=self.x[idx], y=self.y[idx], strip_index=self.strip_index[idx],
                        synthetic=self.synthetic[idx], strips=self.strips,
                        defect_pixels=self.defect_pixels[idx])

    def normal(self) -> PatchSet:
        return self.subset(self.labels == 0)

    def anomalous(self) -> PatchSet:
        return self.subset(self.labels == 1)

    @classmethod
    def concat(cls, parts: list[PatchSet]) -> PatchSet:
        """Join sets that share one ``strips`` tuple (as all splits of one catalog do)."""
        if not parts:
            raise ValueError("PatchSet.concat needs at least one part")
        strips = parts[0].strips
        if any(p.strips is not strips and p.strips != strips for p in parts):
            raise ValueError("PatchSet.concat: parts come from different strip catalogs")
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts])
                      for name in ("images", "masks", "labels", "x", "y", "strip_index",
                                   "synthetic", "defect_pixels")}, strips=strips)

    @classmethod
    def empty(cls, patch_size: int, channels: int, strips: tuple[StripInfo, ...] = ()
              ) -> PatchSet:
        p = patch_size
        return cls(images=np.zeros((0, channels, p, p), np.uint8),
                   masks=np.zeros((0, p, p), bool), labels=np.zeros(0, np.int64),
                   x=np.zeros(0, np.int32), y=np.zeros(0, np.int32),
                   strip_index=np.zeros(0, np.int32), synthetic=np.zeros(0, bool),
                   strips=strips)
