"""Pixel-level metrics: pixel AUROC and AUPRO (area under the per-region-overlap curve).

PRO (Bergmann et al. 2020, "Uninformed Students", CVPR, §4.1; Bergmann et al. 2021, IJCV
"The MVTec Anomaly Detection Dataset", §4.2) averages, over every connected defect region, the
share of the region's pixels above a threshold, so a large defect cannot hide a missed small
one. AUPRO integrates PRO over the false-positive rate of normal pixels from 0 to
``fpr_limit`` (0.3 in the papers) and divides by the limit, so a perfect map scores 1.0 and a
random one ``fpr_limit / 2`` (PRO ≈ FPR). Regions are 8-connected, as in the MVTec reference
code. No well-kept library offers AUPRO on NumPy arrays, so it is implemented here.

A test set of AITEX strips holds ~10⁸ pixels. ``PixelSample`` keeps every defect pixel (region
sizes stay exact) and a uniform random sample of at most ``max_normal_pixels`` normal pixels
(bottom-k of random keys, streamed image by image), which estimates both the FPR axis and the
AUROC without bias at bounded memory. Below the limit nothing is sampled and the metrics are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)

MAX_NORMAL_PIXELS = 1 << 23  # ~8.4 M: AUROC sampling error ~1e-4, ~100 MB while sorting
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class PixelSample:
    """Pixels of many (map, mask) pairs, added one image at a time, for pixel AUROC and AUPRO.

    Pixels whose map value is not finite (NaN where no patch covered a strip) are left out.
    """

    def __init__(self, max_normal_pixels: int = MAX_NORMAL_PIXELS, seed: int = 0) -> None:
        if isinstance(max_normal_pixels, bool) or not isinstance(max_normal_pixels, int) \
                or max_normal_pixels < 1:
            raise ValueError(f"max_normal_pixels={max_normal_pixels!r} is invalid; allowed: an "
                             "integer >= 1")
        self.max_normal_pixels = max_normal_pixels
        self._rng = np.random.default_rng(seed)
        self._threshold = np.inf  # keys at or above it can no longer enter the bottom-k sample
        self._normal: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []
        self._buffered = 0
        self._anomalous: list[np.ndarray] = []
        self._region_ids: list[np.ndarray] = []
        self._region_sizes: list[np.ndarray] = []
        self.n_regions = 0
        self.n_normal_seen = 0

    @classmethod
    def from_maps(cls, maps: np.ndarray | Sequence[np.ndarray],
                  masks: np.ndarray | Sequence[np.ndarray], **kwargs) -> PixelSample:
        if len(maps) != len(masks):
            raise ValueError(f"need one mask per map: {len(maps)} maps, {len(masks)} masks")
        sample = cls(**kwargs)
        for amap, mask in zip(maps, masks, strict=True):
            sample.add(amap, mask)
        return sample

    def add(self, amap: np.ndarray, mask: np.ndarray) -> None:
        """One image: ``amap`` (H, W) scores, ``mask`` (H, W) true on defect pixels."""
        amap, mask = np.asarray(amap, dtype=np.float32), np.asarray(mask, dtype=bool)
        if amap.ndim != 2 or amap.shape != mask.shape:
            raise ValueError(f"map and mask must be 2-D and of one shape, got {amap.shape} and "
                             f"{mask.shape}")
        valid = np.isfinite(amap)
        labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
        defect = mask & valid
        # Renumber the regions that have scored pixels 0..k-1, then offset them globally.
        ids, region_of_pixel, sizes = np.unique(labels[defect], return_inverse=True,
                                                return_counts=True)
        self._anomalous.append(amap[defect])
        self._region_ids.append(region_of_pixel.reshape(-1).astype(np.int64) + self.n_regions)
        self._region_sizes.append(sizes)
        self.n_regions += len(ids)

        normal = amap[~mask & valid]
        self.n_normal_seen += normal.size
        keys = self._rng.random(normal.size)
        keep = keys < self._threshold
        self._normal.append(normal[keep])
        self._keys.append(keys[keep])
        self._buffered += int(keep.sum())
        if self._buffered > 2 * self.max_normal_pixels:
            self._compact()

    def _compact(self) -> None:
        normal, keys = np.concatenate(self._normal), np.concatenate(self._keys)
        if keys.size > self.max_normal_pixels:
            smallest = np.argpartition(keys, self.max_normal_pixels - 1)[:self.max_normal_pixels]
            normal, keys = normal[smallest], keys[smallest]
            self._threshold = float(keys.max())
        self._normal, self._keys, self._buffered = [normal], [keys], keys.size

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(normal scores, defect scores, region id per defect pixel, pixels per region)."""
        if self._normal:
            self._compact()
        normal = self._normal[0] if self._normal else np.zeros(0, np.float32)
        anomalous = np.concatenate(self._anomalous) if self._anomalous else np.zeros(0, np.float32)
        regions = np.concatenate(self._region_ids) if self._region_ids else np.zeros(0, np.int64)
        sizes = np.concatenate(self._region_sizes) if self._region_sizes else np.zeros(0, np.int64)
        return normal, anomalous, regions, sizes

    def auroc(self) -> float:
        normal, anomalous, _, _ = self.arrays()
        if normal.size == 0 or anomalous.size == 0:
            logger.warning("pixel AUROC is undefined with %d normal and %d defect pixels; "
                           "reporting NaN", normal.size, anomalous.size)
            return float("nan")
        labels = np.r_[np.zeros(normal.size, bool), np.ones(anomalous.size, bool)]
        return float(roc_auc_score(labels, np.r_[normal, anomalous]))

    def aupro(self, fpr_limit: float = 0.3) -> float:
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit={fpr_limit!r} is out of range; allowed (0, 1]")
        normal, anomalous, regions, sizes = self.arrays()
        if normal.size == 0 or sizes.size == 0:
            logger.warning("AUPRO is undefined with %d normal pixels and %d defect regions; "
                           "reporting NaN", normal.size, sizes.size)
            return float("nan")
        fpr, pro = pro_curve(normal, anomalous, regions, sizes)
        return integrate_to(fpr, pro, fpr_limit) / fpr_limit


def pro_curve(normal: np.ndarray, anomalous: np.ndarray, regions: np.ndarray, sizes: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold, from the highest score down, starting at (0, 0).

    Lowering the threshold past a normal pixel adds 1/n_normal to the FPR; past a pixel of
    region r it adds 1/(n_regions · |r|) to the mean per-region overlap.
    """
    scores = np.r_[normal, anomalous]
    fpr_step = np.r_[np.full(normal.size, 1.0 / normal.size), np.zeros(anomalous.size)]
    pro_step = np.r_[np.zeros(normal.size), 1.0 / (sizes.size * sizes[regions])]
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    fpr, pro = np.cumsum(fpr_step[order]), np.cumsum(pro_step[order])
    last_of_tie = np.r_[ordered[1:] != ordered[:-1], True]  # tied scores pass a threshold together
    return (np.minimum(np.r_[0.0, fpr[last_of_tie]], 1.0),
            np.minimum(np.r_[0.0, pro[last_of_tie]], 1.0))


def integrate_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under the non-decreasing-x curve (x, y) from x[0] to ``limit``."""
    end = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:end], y[:end]
    if end < x.size:  # cut the segment that crosses the limit, interpolating linearly
        t = (limit - x[end - 1]) / (x[end] - x[end - 1])
        xs, ys = np.r_[xs, limit], np.r_[ys, y[end - 1] + t * (y[end] - y[end - 1])]
    return float(np.trapezoid(ys, xs))


def pixel_auroc(maps: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray],
                *, max_normal_pixels: int = MAX_NORMAL_PIXELS, seed: int = 0) -> float:
    """ROC AUC of every pixel's map value against its mask (scikit-learn ``roc_auc_score``)."""
    return PixelSample.from_maps(maps, masks, max_normal_pixels=max_normal_pixels,
                                 seed=seed).auroc()


def aupro(maps: np.ndarray | Sequence[np.ndarray], masks: np.ndarray | Sequence[np.ndarray],
          fpr_limit: float = 0.3, *, max_normal_pixels: int = MAX_NORMAL_PIXELS, seed: int = 0
          ) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (1.0 = perfect)."""
    return PixelSample.from_maps(maps, masks, max_normal_pixels=max_normal_pixels,
                                 seed=seed).aupro(fpr_limit)
