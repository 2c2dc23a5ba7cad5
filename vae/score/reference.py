"""The strip as its own reference: each patch's residual compared with the rest of its strip.

On real AITEX the clean patches of a defective strip often do not look like the defect-free
strips (another roll, another tension, another light), so a residual large for a whole strip is
not a defect. A strip, though, is one woven piece under one illumination, and a defect covers a
small part of it. So every ``window``² window of a patch's signed residual (x − x̂, channel
mean) is matched to its nearest window among the *other* patches of the same strip, and the
distance is the anomaly map: texture that recurs elsewhere on the strip scores low, texture
found nowhere else scores high. This is the nearest-neighbour idea of PatchCore (Roth et al.
2022), with the memory bank taken from the strip being inspected instead of from training data.

Windows are compared in a PCA basis fitted on the strip's own query windows (of its bank
patches, where only some may serve as references; ``dimensions``
components, exact eigendecomposition, so the result is deterministic and needs no training
state). Measured on the AITEX dev split's test strips, through ``aitexvae score`` on one
champion (``bench/real_quality.py``): fabric-matched AUROC 0.722 → 0.832, DRA 0.811 → 0.915.
A basis fitted on training residuals did better on a blur residual with the smoothed max
(``bench/self_reference_probe.py``: 0.859 against 0.826 for the strip's own), but not with
``"strip_peak"``'s reduction (0.880 against 0.881), so no basis travels with the model.

How a patch's distances become its score is the reference's name (``METHODS``). ``"strip"``
(model format 4) averages each 3×3 block of neighbouring windows and takes the max: a
32-px footprint that dilutes the small defects (under 100 px) that are most of AITEX's.
``"strip_peak"`` (format 5) takes the unsmoothed max *above the patch's own median distance*:
a patch scores how far its worst window stands out of the rest of the same patch, so a patch
whose whole texture is a little off the strip's (a fold, a shade) no longer outranks a
defect on a quiet one. On the same champion and test strips, through ``aitexvae score``:
0.815 (``strip``) → 0.880 fabric-matched, DRA 0.897 → 0.899 (the unsmoothed max alone, in an
experiment: 0.854); on a blur residual (the probe, strip basis) 0.826 → 0.881.

``"strip_peak"`` also leaves out what is not fabric (``off_fabric``). Where a fabric is
narrower than the camera's field, AITEX strips end in the white backlit background, in whole
columns, and the one patch that holds the fabric's edge is unlike any other patch of its
strip: such patches were nearly all the clean ones that outranked the median defect of
fabrics 00, 02 and 03. So windows within one window of the background (columns mostly at the
white clip, from the patch's side) neither score nor set the median. On another champion of
the same search recipe, through ``aitexvae score``: 0.876 → 0.900 fabric-matched, DRA 0.898 →
0.935 (blur residual, the probe: 0.881 → 0.906); end to end, README "What moves detection":
0.903 / 0.938. A hole that shows the background is a small part of its columns and is still
scored.

``"strip_fabric"`` (format 6) finds the background along the whole strip instead of from each
patch's border (``off_fabric``): on fabrics 04 and 06 a machine part, textured and unclipped,
fills a strip's first 530–780 px up to a thin clipped line where the fabric begins, and those
patches, the line's above all, were most of what the DRA figure lost (README "What moves
detection on real fabric" has the figures).

A defect that repeats along the whole strip (a missed yarn running its length) recurs in the
reference and is not found this way: that is the price of a reference without training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vae.config import REFERENCES
from vae.score.maps import iter_reconstructions, scoring_precision

__all__ = ["EDGE_SCOPES", "METHODS", "REFERENCES", "ReferenceMethod", "StripLayout",
           "clipped_columns", "fabric_windows", "layout_scores", "lonely_patch", "off_fabric",
           "reference_scorer", "signed_residual", "signed_residuals", "strip_reference",
           "strip_scores"]
QUERY_STRIDE, BANK_STRIDE = 8, 4  # px: the bank is denser so a shifted repeat still matches
WINDOW, DIMENSIONS = 16, 32
MIN_PATCHES = 2  # a patch needs at least one other patch of its strip to be compared with
WHITE_CLIP = 254.5 / 255  # x in [0, 1] at or above it was uint8 255: the sensor's white clip
BACKGROUND_FRACTION = 0.5  # a column more than half at the white clip is clipped
EDGE_ZONE = 0.25  # the share of a strip, at either end, where its fabric's edge is looked for
# Where a method looks for the fabric's edge: nowhere, from each patch's border (format 5), or
# along the whole strip (format 6; ``off_fabric``).
EDGE_SCOPES = ("none", "patch", "strip")


@dataclass(frozen=True)
class ReferenceMethod:
    """How a patch's grid of nearest-window distances becomes its score and map."""

    smooth: int  # k × k neighbouring windows averaged first (1: none)
    above_median: bool  # subtract the patch's own median distance (its typical window)
    edge: str  # EDGE_SCOPES: where the background beyond the fabric's edge is found and left out

    @property
    def reduction(self) -> str:
        return "max_above_median" if self.above_median else "max"


METHODS = {"strip": ReferenceMethod(smooth=3, above_median=False, edge="none"),
           "strip_peak": ReferenceMethod(smooth=1, above_median=True, edge="patch"),
           "strip_fabric": ReferenceMethod(smooth=1, above_median=True, edge="strip")}
assert set(METHODS) == set(REFERENCES) - {"none"}, "vae.config.REFERENCES owns the names"


def reference_scorer(reference: str) -> dict[str, object]:
    """What scored the patches, as summary.json records it in place of the score section."""
    method = _method(reference)
    return {"reference": reference, "window": WINDOW, "dimensions": DIMENSIONS,
            "query_stride": QUERY_STRIDE, "bank_stride": BANK_STRIDE,
            "smooth": method.smooth, "reduction": method.reduction, "edge": method.edge}


def _method(reference: str) -> ReferenceMethod:
    if reference not in METHODS:
        raise ValueError(f"reference={reference!r} is not a strip reference; allowed: "
                         f"{', '.join(METHODS)}")
    return METHODS[reference]


@dataclass(frozen=True, eq=False)  # ndarray fields: identity, not a truth-ambiguous ==
class StripLayout:
    """Where N patches lie: ``strips`` (N,) the strip each belongs to, ``corners`` (N, 2) its
    (x, y) there, ``bank`` (N,) bool the patches that may serve as references (None: all)."""

    strips: np.ndarray
    corners: np.ndarray
    bank: np.ndarray | None = None

    def __post_init__(self) -> None:
        count = len(self.strips)
        if np.shape(self.corners) != (count, 2) or (
                self.bank is not None and np.shape(self.bank) != (count,)):
            raise ValueError(f"a StripLayout of {count} patches needs corners ({count}, 2) and "
                             f"bank ({count},); got {np.shape(self.corners)} and "
                             f"{None if self.bank is None else np.shape(self.bank)}")

    def lonely(self, height: int, width: int) -> tuple[int, tuple[int, int]] | None:
        """(strip, (x, y)) of the first patch of ``height`` × ``width`` that no patch of its
        strip can serve as a reference for (``lonely_patch``), else None."""
        strips = np.asarray(self.strips)
        for strip in np.unique(strips):
            rows = np.flatnonzero(strips == strip)
            bank = None if self.bank is None else np.asarray(self.bank, bool)[rows]
            corner = lonely_patch(np.asarray(self.corners)[rows], height, width, bank)
            if corner is not None:
                return int(strip), corner
        return None


def signed_residual(x_unit: torch.Tensor, recon_unit: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x and x̂ in [0, 1] → (B, H, W) float32 x − x̂, averaged over channels."""
    return (x_unit - recon_unit).mean(1).float()


def clipped_columns(x_unit: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x in [0, 1] → (B, W) bool: the columns more than half at the white clip in
    every channel — all that ``off_fabric`` needs of a patch."""
    return (x_unit >= WHITE_CLIP).all(1).float().mean(1) > BACKGROUND_FRACTION


def off_fabric(clipped: np.ndarray | torch.Tensor, corners: np.ndarray | None = None, *,
               edge: str, bank: np.ndarray | None = None, margin: int = 0) -> np.ndarray:
    """(N, W) ``clipped_columns`` of one strip's patches → (N, W) bool: the columns that lie
    beyond the fabric's edge, found as ``edge`` says, and those within ``margin`` px of them.

    Columns, because an AITEX strip is one line-scan across the roll: the fabric's edge runs its
    full height. ``"patch"`` (format 5): the run of clipped columns from a patch's left or right
    border — where a fabric is narrower than the camera's field, the white backlit background —
    and the margin within the patch. ``"strip"`` (format 6): along the strip the patches form,
    everything from the strip's end to its innermost clipped column within ``EDGE_ZONE`` of that
    end (and the run of clipped columns it belongs to), and the margin along the strip, so an
    edge at a patch's border reaches into the next patch. That also takes in what the patch
    rule cannot see: on some AITEX fabrics a machine part fills the strip's first 500–800 px,
    textured and unclipped, up to a thin clipped line at the fabric's edge, and its patches and
    the edge's own were the clean patches that most often outranked defects. A hole or a bright
    fleck that clips is a small part of its columns, and a clipped yarn in the strip's middle
    half is not near its end: both stay fabric. A clipped defect within the outer quarter would
    hide what lies outside it: in all 150 strips of the dev split the clipped columns lie at
    the fabric's edge only.

    ``corners`` (N, 2) (x, y): where the patches lie; None: side by side, left to right, in the
    order given. The ends are those of the patches given: send a whole strip. A strip column is
    clipped where every patch covering it (of the ``bank`` patches, when given: a validation
    set's synthetic defects do not move the edge) has it so.
    """
    if edge not in EDGE_SCOPES:
        raise ValueError(f"edge={edge!r}; allowed: {', '.join(EDGE_SCOPES)}")
    clipped = torch.as_tensor(clipped).cpu().numpy().astype(bool)
    if clipped.ndim != 2:
        raise ValueError(f"clipped must have shape (patches, width), got {clipped.shape}")
    count, width = clipped.shape
    for name, value, shape in (("corners", corners, (count, 2)), ("bank", bank, (count,))):
        if value is not None and np.shape(value) != shape:
            raise ValueError(f"{name} must have shape {shape} for {count} patches, "
                             f"got {np.shape(value)}")
    if edge == "none" or not count:
        return np.zeros_like(clipped)
    if edge == "patch":
        return np.stack([_widen(_beyond_edge(row, 1), margin) for row in clipped])
    xs = np.arange(count) * width if corners is None else np.asarray(corners)[:, 0].astype(int)
    xs = xs - xs.min()
    span = int(xs.max()) + width
    covered, unclipped = np.zeros(span, int), np.zeros(span, int)
    for k in np.flatnonzero(np.ones(count, bool) if bank is None else np.asarray(bank, bool)):
        covered[xs[k]:xs[k] + width] += 1
        unclipped[xs[k]:xs[k] + width] += ~clipped[k]
    line = _widen(_beyond_edge((covered > 0) & (unclipped == 0), int(span * EDGE_ZONE)), margin)
    return np.stack([line[x:x + width] for x in xs])


def _beyond_edge(columns: np.ndarray, zone: int) -> np.ndarray:
    """(L,) bool clipped columns → (L,) bool: from either end to the innermost clipped column
    within ``zone`` of it, and on through the clipped run that column belongs to (``zone`` 1:
    the run of clipped columns that starts at the end)."""
    length = len(columns)
    background = np.zeros(length, bool)
    for from_right in (False, True):
        line = columns[::-1] if from_right else columns
        inside = np.flatnonzero(line[:zone])
        if not inside.size:
            continue
        after = np.flatnonzero(~line[inside[-1]:])  # the first unclipped column ends the run
        end = inside[-1] + (after[0] if after.size else length - inside[-1])
        if from_right:
            background[length - end:] = True
        else:
            background[:end] = True
    return background


def _widen(columns: np.ndarray, margin: int) -> np.ndarray:
    """(L,) bool → True also within ``margin`` of a True column."""
    if margin <= 0 or not columns.any():
        return columns
    return np.convolve(columns, np.ones(2 * margin + 1), mode="same") > 0


def signed_residuals(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, *,
                     batch_size: int = 64, device: torch.device | str | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) ``signed_residual`` of every patch and (N, W) its ``clipped_columns``, on the
    scoring device."""
    residuals, clipped = [], []
    for x, recon in iter_reconstructions(model, images_uint8, batch_size=batch_size,
                                         device=device):
        residuals.append(signed_residual(x, recon))
        clipped.append(clipped_columns(x))
    return torch.cat(residuals), torch.cat(clipped)


def strip_scores(model: nn.Module, patches: np.ndarray, corners: np.ndarray | None = None, *,
                 reference: str, batch_size: int = 64, device: torch.device | str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(N,) scores and (N, H, W) maps of one strip's patches, each against the others."""
    residuals, clipped = signed_residuals(model, patches, batch_size=batch_size, device=device)
    with scoring_precision(residuals.device):  # no TF32 in the distances either
        maps, scores = strip_reference(residuals, corners, reference=reference, clipped=clipped)
    return scores.cpu().numpy(), maps.cpu().numpy()


def layout_scores(residuals: torch.Tensor, layout: StripLayout, *, reference: str,
                  clipped: torch.Tensor | None = None) -> np.ndarray:
    """(N,) float32 strip-reference scores of patches from several strips (a validation set).

    Each strip is scored on its own. A strip where some patch has no reference (it is alone,
    or overlaps every bank patch) gets NaN for all its patches, so a set that cannot be scored
    this way says so instead of ranking on part of it. ``clipped`` (N, W) bool: as in
    ``strip_reference``.
    """
    height, width = residuals.shape[1:]
    if len(layout.strips) != len(residuals):
        raise ValueError(f"the StripLayout places {len(layout.strips)} patches, but "
                         f"{len(residuals)} were scored; allowed: one layout row per patch")
    scores = np.full(len(residuals), np.nan, np.float32)
    strips = np.asarray(layout.strips)
    for strip in np.unique(strips):
        rows = np.flatnonzero(strips == strip)
        corners = np.asarray(layout.corners)[rows]
        bank = None if layout.bank is None else np.asarray(layout.bank, bool)[rows]
        if lonely_patch(corners, height, width, bank) is not None:
            continue
        index = torch.as_tensor(rows, device=residuals.device)
        with scoring_precision(residuals.device):
            own = None if clipped is None else clipped[index]
            scores[rows] = strip_reference(residuals[index], corners, bank=bank,
                                           reference=reference, clipped=own)[1].cpu().numpy()
    return scores


def _windows(residuals: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """(N, H, W) → (N, L, size²): every window at ``stride``."""
    return F.unfold(residuals[:, None], size, stride=stride).transpose(1, 2)


def _references(corners: np.ndarray | None, count: int, height: int, width: int,
                bank: np.ndarray | None = None) -> np.ndarray:
    """(N, N) bool: patch k may serve as a reference for patch j — it is in the bank and shares
    no pixel with j (so is not j)."""
    if corners is None:
        allowed = ~np.eye(count, dtype=bool)
    else:
        corners = np.asarray(corners)
        if corners.shape != (count, 2):
            raise ValueError(f"corners must have shape ({count}, 2), got {corners.shape}")
        dx = np.abs(corners[:, None, 0] - corners[None, :, 0])
        dy = np.abs(corners[:, None, 1] - corners[None, :, 1])
        allowed = (dx >= width) | (dy >= height)
    if bank is not None:
        bank = np.asarray(bank, dtype=bool)
        if bank.shape != (count,):
            raise ValueError(f"bank must be a bool mask of shape ({count},), got {bank.shape}")
        allowed &= bank[None, :]
    return allowed


def lonely_patch(corners: np.ndarray, height: int, width: int, bank: np.ndarray | None = None
                 ) -> tuple[int, int] | None:
    """The (x, y) of the first patch that no (bank) patch can serve as a reference for (every
    other shares pixels with it, or there is none), else None."""
    corners = np.asarray(corners).reshape(-1, 2)
    alone = ~_references(corners, len(corners), height, width, bank).any(1)
    return (int(corners[alone][0, 0]), int(corners[alone][0, 1])) if alone.any() else None


def _basis(queries: torch.Tensor, dimensions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and top ``dimensions`` principal axes of (M, D) windows (exact, deterministic)."""
    flat = queries.reshape(-1, queries.shape[-1]).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return mean.float(), vectors[:, -dimensions:].flip(1).float()


def strip_reference(residuals: torch.Tensor | np.ndarray, corners: np.ndarray | None = None,
                    *, reference: str, bank: np.ndarray | None = None,
                    clipped: torch.Tensor | np.ndarray | None = None, window: int = WINDOW,
                    dimensions: int = DIMENSIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) signed residuals of one strip's N patches → ((N, H, W) maps, (N,) scores).

    A query window every 8 px is matched to its nearest bank window (every 4 px, so a shifted
    repeat still matches) in the strip's other patches; ``reference`` (``METHODS``) says how
    the grid of distances becomes the patch's score: smoothed over 3×3 neighbouring windows
    and its max (``"strip"``), or its max above its median (``"strip_peak"``,
    ``"strip_fabric"``: they find the background differently, ``off_fabric``). The same
    values, spread back over each window's pixels (the mean of the windows covering a pixel),
    are its map, which stitches like any other. ``corners`` (N, 2) (x, y): where the patches
    lie in the strip; a patch that shares pixels with the scored one (a stride below the patch
    size) is left out of its reference, or its own defect would be found there. None: the
    patches do not overlap.
    ``bank`` (N,) bool: the patches that may serve as references, and whose windows the basis
    is fitted on (None: all; a validation set leaves out its synthetic-defect copies, which
    duplicate clean patches of the same strip). ``clipped`` (N, W) bool: the patches'
    ``clipped_columns``, from which a method with an ``edge`` finds the background
    (``off_fabric``) and scores only the windows more than one window away from it (a patch with
    none scores 0). None: every pixel is fabric. Runs on the residuals' device.
    """
    method = _method(reference)
    residuals = torch.as_tensor(residuals, dtype=torch.float32)
    if residuals.ndim != 3:
        raise ValueError(f"residuals must have shape (N, H, W), got {tuple(residuals.shape)}")
    count, height, width = residuals.shape
    if count < MIN_PATCHES:
        raise ValueError(f"a strip reference needs at least {MIN_PATCHES} patches of one strip, "
                         f"got {count}")
    if not 1 <= dimensions <= window * window or window > min(height, width):
        raise ValueError(f"window={window}, dimensions={dimensions} are invalid for "
                         f"{height}×{width} patches; allowed: window ≤ {min(height, width)}, "
                         f"1 ≤ dimensions ≤ window²")
    allowed = _references(corners, count, height, width, bank)
    alone = np.flatnonzero(~allowed.any(1))
    if alone.size:
        first = alone[0]
        where = f"patch {first}" if corners is None else \
            f"the patch at ({int(corners[first][0])}, {int(corners[first][1])})"
        others = "patch of its strip" if bank is None else "bank patch of its strip"
        raise ValueError(f"{where} has nothing to be compared with: every other {others} "
                         f"shares pixels with it, or there is none; allowed: patches cut at a "
                         f"stride of at least the patch size ({width}), and a bank of at least "
                         "one other patch")
    allowed = torch.from_numpy(allowed).to(residuals.device)
    queries = _windows(residuals, window, QUERY_STRIDE)
    fitted_on = queries if bank is None else queries[torch.as_tensor(np.asarray(bank, bool))
                                                     .to(residuals.device)]
    mean, basis = _basis(fitted_on, dimensions)
    queries = (queries - mean) @ basis
    windows = (_windows(residuals, window, BANK_STRIDE) - mean) @ basis  # (N, Lb, d)
    rows = (height - window) // QUERY_STRIDE + 1
    cols = (width - window) // QUERY_STRIDE + 1
    cover = F.fold(torch.ones(1, window * window, rows * cols, device=residuals.device),
                   (height, width), window, stride=QUERY_STRIDE)
    fabric = None
    if clipped is not None:
        clipped = torch.as_tensor(clipped)
        if tuple(clipped.shape) != (count, width):
            raise ValueError(f"clipped must have shape (patches, width) {(count, width)} for "
                             f"residuals {(count, height, width)}, got {tuple(clipped.shape)}")
        if method.edge != "none":
            near = off_fabric(clipped, corners, edge=method.edge, bank=bank, margin=window)
            fabric = fabric_windows(torch.from_numpy(near).to(residuals.device), height, window)
    maps = torch.empty(count, height, width, device=residuals.device)
    scores = torch.empty(count, device=residuals.device)
    for k in range(count):
        distance = _nearest(queries[k], windows[allowed[k]].reshape(-1, windows.shape[-1]))
        grid = distance.view(1, 1, rows, cols)
        if method.smooth > 1:
            grid = F.avg_pool2d(grid, method.smooth, stride=1, padding=method.smooth // 2)
        keep = None if fabric is None else fabric[k:k + 1]
        if method.above_median:  # torch.quantile interpolates as np.median does
            typical = grid if keep is None else grid[keep]
            grid = (grid - torch.quantile(typical, 0.5)).clamp_min(0) if typical.numel() \
                else torch.zeros_like(grid)
        if keep is not None:  # background windows neither score nor show on the map
            grid = torch.where(keep, grid, 0.0)
        scores[k] = grid.amax()
        spread = F.fold(grid.reshape(1, 1, -1).expand(1, window * window, -1),
                        (height, width), window, stride=QUERY_STRIDE)
        maps[k] = (spread / cover.clamp_min(1))[0, 0]  # a pixel no window covers: 0
    return maps, scores


def fabric_windows(near: torch.Tensor, height: int, window: int = WINDOW) -> torch.Tensor:
    """(N, W) bool columns near the background (``off_fabric`` with a margin of one window, so
    the fabric's frayed edge, which is not a straight column, stays out as well) of
    ``height``-px patches → (N, 1, rows, cols) bool: the query windows that touch none of them."""
    cols = F.max_pool1d(near.float()[:, None], window, stride=QUERY_STRIDE) == 0  # (N, 1, cols)
    rows = (height - window) // QUERY_STRIDE + 1
    return cols[:, :, None, :].expand(-1, -1, rows, -1)


def _nearest(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(Q,) distance of each query to its nearest bank row; the bank in chunks, so memory stays
    at Q × chunk distances whatever the strip's length. ``|b|² − 2 q·b`` is minimised first
    and ``|q|²`` added after, so the square root runs once per query, not per pair: half the
    time of ``torch.cdist``, which matters once validation scores this way every epoch."""
    best = torch.full((len(queries),), torch.inf, device=queries.device)
    for start in range(0, len(bank), chunk):
        part = bank[start:start + chunk]
        partial = torch.addmm(part.square().sum(1)[None], queries, part.T, alpha=-2)
        best = torch.minimum(best, partial.amin(1))
    return (best + queries.square().sum(1)).clamp_min(0).sqrt()
