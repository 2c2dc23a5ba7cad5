"""The strip as its own reference (``vae.score.reference``) on strips this test weaves itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae.score.reference import (
    BANK_STRIDE,
    DIMENSIONS,
    EDGE_ZONE,
    METHODS,
    QUERY_STRIDE,
    WINDOW,
    StripLayout,
    clipped_columns,
    layout_scores,
    lonely_patch,
    off_fabric,
    strip_reference,
)

P = 64
PEAK = "strip_peak"  # format 5; "strip_fabric" (the searched one) and "strip" where a test says so


def _weave(count: int, period: float, contrast: float, seed: int) -> torch.Tensor:
    """(count, P, P) signed residuals of one strip: a periodic weave plus noise, as a
    reconstruction that blurs the weave leaves it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:P, :P * count]
    weave = contrast * np.sin(2 * np.pi * xx / period) * np.cos(2 * np.pi * yy / period)
    strip = weave + rng.normal(0, 0.01, weave.shape)
    return torch.from_numpy(np.stack(np.split(strip, count, axis=1))).float()


@pytest.mark.parametrize("reference", list(METHODS))
def test_a_defect_found_nowhere_else_on_its_strip_scores_highest_where_it_is(reference):
    strip = _weave(8, period=6.0, contrast=0.05, seed=0)
    strip[5, 38:44, 18:24] += 0.15  # a small bright knot in patch 5
    maps, scores = strip_reference(strip, reference=reference)
    assert maps.shape == (8, P, P) and maps.dtype == torch.float32 and scores.shape == (8,)
    # The map spreads the same distances over pixels: its peak is the score, up to that mean.
    assert torch.all(maps.flatten(1).amax(1) <= scores + 1e-6)
    assert float(maps[5].max()) >= 0.5 * float(scores[5])
    assert int(scores.argmax()) == 5
    assert float(scores[5]) > 2 * float(torch.cat([scores[:5], scores[6:]]).max())
    y, x = np.unravel_index(int(maps[5].argmax()), (P, P))
    assert abs(y - 41) <= 10 and abs(x - 21) <= 10, (y, x)


@pytest.mark.parametrize("reference", list(METHODS))
def test_a_strip_unlike_the_others_is_not_a_defect_its_own_knot_is(reference):
    # A strip of another weave and contrast (another roll, another light) scores as low as a
    # plain strip: it is compared only with itself.
    plain = strip_reference(_weave(6, period=6.0, contrast=0.05, seed=1), reference=reference)[1]
    other = _weave(6, period=9.0, contrast=0.12, seed=2)
    other_scores = strip_reference(other, reference=reference)[1]
    assert float(other_scores.max()) < 2 * float(plain.max())
    other[2, 10:16, 40:46] -= 0.3
    knotted = strip_reference(other, reference=reference)[1]
    assert int(knotted.argmax()) == 2 and float(knotted[2]) > 2 * float(other_scores.max())


def test_the_maps_are_deterministic_and_the_patch_itself_is_never_its_own_reference():
    strip = _weave(3, period=6.0, contrast=0.05, seed=3)
    first, second = (strip_reference(s, reference=PEAK) for s in (strip, strip.clone()))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # Two identical patches match each other exactly; a third, different one does not.
    knotted = strip[1].clone()
    knotted[20:30, 20:30] += 0.2 * torch.rand(10, 10)
    twins = torch.stack([strip[0], strip[0], knotted])
    scores = strip_reference(twins, reference=PEAK)[1]
    assert float(scores[0]) == pytest.approx(0.0, abs=1e-3) and float(scores[2]) > 0.1


def test_strip_peak_ranks_a_small_knot_above_a_patch_that_is_rough_all_over():
    # What "strip_peak" changes: a patch whose whole texture is a little off (a rougher yarn,
    # a shade) is far from the rest of the strip everywhere, which the smoothed max ("strip")
    # ranks first; a 3-px knot is far in one spot, which its 3×3 mean dilutes. Measured on
    # real AITEX (vae.score.reference's docstring), the second is what a defect looks like.
    strip = _weave(8, period=6.0, contrast=0.05, seed=0)
    rough = torch.from_numpy(np.random.default_rng(100).normal(0, 0.02, (P, P))).float()
    strip[2] += rough
    strip[5, 30:33, 40:43] += 0.1
    smoothed = strip_reference(strip, reference="strip")[1]
    peak = strip_reference(strip, reference=PEAK)[1]
    assert int(smoothed.argmax()) == 2 and float(smoothed[2]) > 2 * float(smoothed[5])
    assert int(peak.argmax()) == 5 and float(peak[5]) > 2 * float(peak[2])
    others = torch.cat([peak[:2], peak[3:5], peak[6:]])
    assert float(peak[2]) > float(others.max())  # rough still ranks above the plain patches


def test_clipped_columns_are_those_mostly_at_the_white_clip_in_every_channel():
    x = torch.full((3, 2, P, P), 0.5)
    x[0, :, :, :20] = 1.0  # the background beyond the fabric's edge, both channels clipped
    x[0, :, : P // 3, 30] = 1.0  # a third of a column clipped: not
    x[1, :, 20:26, 30:36] = 1.0  # a hole showing the background: not
    x[2, 0, :, :20] = 1.0  # clipped in one channel only: not
    x[2, :, :, 40:42] = 1.0  # a clipped vertical line (a broken yarn, backlit)
    x[2, :, :, P - 3:] = 1.0
    clipped = clipped_columns(x)
    assert clipped.shape == (3, P) and clipped.dtype == torch.bool
    assert np.flatnonzero(clipped[0]).tolist() == list(range(20))
    assert not bool(clipped[1].any())
    assert np.flatnonzero(clipped[2]).tolist() == [40, 41, P - 3, P - 2, P - 1]
    assert not bool(clipped_columns(torch.full((1, 1, P, P), 254 / 255)).any())  # not yet


def test_the_patch_rule_is_the_run_of_clipped_columns_from_a_patchs_border():
    clipped = np.zeros((3, P), bool)
    clipped[0, :20] = clipped[0, 30] = True  # the background, and a clipped line inside
    clipped[1, 40:42] = True  # a clipped line mid-patch: fabric
    clipped[2, P - 3:] = True  # the background begins at the right border
    background = off_fabric(clipped, edge="patch")
    assert background.shape == (3, P) and background.dtype == bool
    assert np.flatnonzero(background[0]).tolist() == list(range(20))
    assert not background[1].any()
    assert np.flatnonzero(background[2]).tolist() == [P - 3, P - 2, P - 1]
    assert off_fabric(np.ones((1, P), bool), edge="patch").all()  # a patch beyond the fabric
    assert not off_fabric(clipped, edge="none").any()


def _strip_columns(clipped: list[int]) -> np.ndarray:
    """(8, P) clipped columns of a strip of 8 patches side by side, clipped at ``clipped``."""
    columns = np.zeros(8 * P, bool)
    columns[clipped] = True
    return columns.reshape(8, P)


def test_the_strip_rule_takes_everything_outside_the_fabrics_edge_line_near_the_strips_end():
    # A strip of 8 patches (512 px, EDGE_ZONE: 128 px at either end). A machine part fills
    # columns 0..73, unclipped, up to a thin clipped line at 74..76 where the fabric begins
    # (AITEX fabric 04); a clipped yarn at 250 in the middle stays fabric; the white background
    # begins at 500.
    assert EDGE_ZONE == 0.25
    clipped = _strip_columns([74, 75, 76, 250, *range(500, 512)])
    corners = np.array([(x, 0) for x in range(0, 8 * P, P)])
    background = off_fabric(clipped, corners, edge="strip").reshape(-1)
    assert np.flatnonzero(background).tolist() == [*range(77), *range(500, 512)]
    # The patch rule sees only the run from a patch's border: neither the machine part nor
    # the line (inside patch 1), only the background at the right.
    patchwise = off_fabric(clipped, edge="patch").reshape(-1)
    assert np.flatnonzero(patchwise).tolist() == list(range(500, 512))
    # Corners in any order, or None (side by side in the order given), place the same columns.
    order = np.random.default_rng(0).permutation(8)
    np.testing.assert_array_equal(off_fabric(clipped[order], corners[order], edge="strip"),
                                  background.reshape(8, P)[order])
    np.testing.assert_array_equal(off_fabric(clipped, edge="strip").reshape(-1), background)
    # A background wider than the zone is one run: all of it (AITEX fabric 03: 1155 of 4096).
    wide = off_fabric(_strip_columns(list(range(200))), corners, edge="strip")
    assert np.flatnonzero(wide.reshape(-1)).tolist() == list(range(200))
    # A clipped line just past the zone (at 130 of 512) is not the fabric's edge.
    assert not off_fabric(_strip_columns([130, 131]), corners, edge="strip").any()
    # The innermost line within the zone is the edge; at the right end, a line with fabric
    # beyond it takes that in too; a strip that does not begin at x = 0 is the same strip.
    lines = off_fabric(_strip_columns([*range(10), 74, 75, 420, 421]), corners + (1000, 0),
                       edge="strip")
    assert np.flatnonzero(lines.reshape(-1)).tolist() == [*range(76), *range(420, 512)]


def test_the_margin_reaches_across_a_patch_border_along_the_strip_not_the_patch():
    clipped = _strip_columns(list(range(128)))  # the background ends where patch 2 begins
    corners = np.array([(x, 0) for x in range(0, 8 * P, P)])
    near = off_fabric(clipped, corners, edge="strip", margin=WINDOW)
    assert np.flatnonzero(near.reshape(-1)).tolist() == list(range(128 + WINDOW))
    patchwise = off_fabric(clipped, edge="patch", margin=WINDOW)
    assert np.flatnonzero(patchwise.reshape(-1)).tolist() == list(range(128))
    # So the fabric's frayed edge at the start of patch 2 is left out by strip_fabric only.
    strip = _weave(8, period=6.0, contrast=0.05, seed=5)
    strip[:2] = 0.0  # the background, reconstructed well
    strip[2, :, :6] += 0.3  # the frayed edge
    fabric = strip_reference(strip, corners, reference="strip_fabric",
                             clipped=torch.from_numpy(clipped))[1]
    peak = strip_reference(strip, corners, reference="strip_peak",
                           clipped=torch.from_numpy(clipped))[1]
    assert int(peak.argmax()) == 2 and float(fabric[2]) < float(peak[2]) / 2


def test_the_strip_rule_reads_the_edge_from_the_bank_and_from_every_row_of_patches():
    # A validation set's synthetic copy (same corner, not in the bank) painted over the
    # background does not move the strip's edge: the bank's patches place it, for the copy too.
    clipped = np.zeros((3, P), bool)
    clipped[0, :12] = True  # patch 0 begins with the background; its copy (2) does not
    corners = np.array([(0, 0), (P, 0), (0, 0)])
    bank = np.array([True, True, False])
    background = off_fabric(clipped, corners, edge="strip", bank=bank)
    assert np.flatnonzero(background[0]).tolist() == np.flatnonzero(background[2]).tolist() \
        == list(range(12)) and not background[1].any()
    assert not off_fabric(clipped, corners, edge="strip").any()  # every patch counted: none
    # Two rows of patches: a column is clipped only where every patch covering it is.
    rows = np.zeros((4, P), bool)
    rows[0, 5] = rows[2, 5] = rows[0, 9] = True  # column 5 in both rows, 9 in one
    corners = np.array([(0, 0), (P, 0), (0, P), (P, P)])
    background = off_fabric(rows, corners, edge="strip")
    assert np.flatnonzero(background[0]).tolist() == list(range(6))
    np.testing.assert_array_equal(background[0], background[2])


@pytest.mark.parametrize("reference", ["strip_peak", "strip_fabric"])
def test_the_reference_leaves_out_the_fabrics_edge_and_still_finds_a_hole(reference):
    # The patch holding the fabric's edge is the only one of its strip with that edge, so it
    # is far from every reference there; a defect is what should rank first.
    strip = _weave(8, period=6.0, contrast=0.05, seed=2)
    clipped = torch.zeros(8, P, dtype=torch.bool)
    clipped[0, :24] = True
    strip[0, :, :24] = 0.0  # flat white: reconstructed well
    strip[0, :, 24:30] += 0.3  # the frayed edge: not
    strip[5, 30:34, 40:44] += 0.4  # a 4-px hole, clipped too, but a small part of its columns
    blind = strip_reference(strip, reference=reference)[1]
    maps, seen = strip_reference(strip, reference=reference, clipped=clipped)
    plain = torch.cat([seen[1:5], seen[6:]])
    assert int(blind.argmax()) == 0 and float(blind[0]) > 2 * float(plain.max())
    assert int(seen.argmax()) == 5 and float(seen[5]) > 2 * float(seen[0])
    assert float(seen[0]) < 2 * float(plain.max())  # the rest of the edge patch is plain fabric
    assert torch.equal(seen[1:], blind[1:])  # nothing changes where there is no background
    assert not bool(maps[0, :, :24 + WINDOW].any())  # the edge is not drawn on the map either
    everywhere = torch.ones(8, P, dtype=torch.bool)
    assert not bool(strip_reference(strip, reference=reference, clipped=everywhere)[1].any())
    smoothed = strip_reference(strip, reference="strip")[1]  # format 4: no background rule
    assert torch.equal(strip_reference(strip, reference="strip", clipped=clipped)[1], smoothed)


def test_strip_fabric_leaves_out_a_machine_part_beside_the_fabric_that_strip_peak_scores():
    # What format 6 adds: the strip begins with 1.5 patches of something that is not the weave
    # (a machine part: unclipped, its own texture), then a thin clipped line, then fabric.
    strip = _weave(8, period=6.0, contrast=0.05, seed=3)
    rng = np.random.default_rng(3)
    strip[0] = torch.from_numpy(rng.normal(0, 0.08, (P, P))).float()
    strip[1, :, :30] = torch.from_numpy(rng.normal(0, 0.08, (P, 30))).float()
    strip[1, :, 30:32] = 0.0  # the clipped line: white, reconstructed well
    clipped = torch.zeros(8, P, dtype=torch.bool)
    clipped[1, 30:32] = True
    strip[6, 30:34, 10:14] += 0.15  # a small knot
    peak = strip_reference(strip, reference="strip_peak", clipped=clipped)[1]
    fabric = strip_reference(strip, reference="strip_fabric", clipped=clipped)[1]
    assert int(peak.argmax()) in (0, 1) and float(peak[6]) < float(peak[:2].max())
    assert int(fabric.argmax()) == 6 and float(fabric[0]) == 0.0
    assert float(fabric[1]) < float(fabric[6]) / 2  # the fabric right of the line still scores
    assert torch.equal(fabric[2:], peak[2:])


def test_a_layout_scores_each_strip_with_its_own_background():
    strips = torch.cat([_weave(4, period=6.0, contrast=0.05, seed=s) for s in (11, 12)])
    strips[1, :, :20] += 0.3
    clipped = torch.zeros(8, P, dtype=torch.bool)
    clipped[1, :20] = True
    layout = StripLayout(np.repeat([0, 1], 4), np.array([(P * (i % 4), 0) for i in range(8)]))
    got = layout_scores(strips, layout, reference=PEAK, clipped=clipped)
    for rows in (slice(0, 4), slice(4, 8)):
        expected = strip_reference(strips[rows], layout.corners[rows], reference=PEAK,
                                   clipped=clipped[rows])[1].numpy()
        np.testing.assert_array_equal(got[rows], expected)
    blind = layout_scores(strips, layout, reference=PEAK)
    assert got[1] < blind[1] / 2 and np.array_equal(got[4:], blind[4:])


def test_a_layout_finds_each_strips_edge_from_its_bank_patches():
    # strip_fabric in a validation layout: strip 0 begins with the background (patch 0) and a
    # synthetic copy of patch 0 (not in the bank) has it painted over; the copy is still left
    # out where its original is, so its score is its own defect's, not the background's.
    clean = _weave(4, period=6.0, contrast=0.05, seed=13)
    clean[0, :, :20] = 0.0
    clean[0, :, 20:24] += 0.3  # the frayed edge
    copy = clean[:1].clone()
    copy[0, 30:34, 40:44] += 0.4  # its synthetic defect
    residuals = torch.cat([clean, copy])
    clipped = torch.zeros(5, P, dtype=torch.bool)
    clipped[0, :20] = True
    layout = StripLayout(np.zeros(5, int), np.array([(0, 0), (P, 0), (2 * P, 0), (3 * P, 0),
                                                     (0, 0)]), np.array([True] * 4 + [False]))
    got = layout_scores(residuals, layout, reference="strip_fabric", clipped=clipped)
    np.testing.assert_array_equal(got, strip_reference(
        residuals, layout.corners, reference="strip_fabric", bank=layout.bank,
        clipped=clipped)[1].numpy())
    ignored = strip_reference(residuals, layout.corners, reference="strip_fabric",
                              clipped=clipped)[1].numpy()  # the bank not used to find the edge
    assert got[0] < ignored[0] / 2 and int(np.argmax(got)) == 4


def test_the_fabric_windows_equal_a_plain_numpy_search():
    strip = _weave(3, period=6.0, contrast=0.05, seed=9)
    clipped = torch.zeros(3, P, dtype=torch.bool)
    clipped[1, 56:] = True
    starts = np.tile(np.arange(0, P - WINDOW + 1, QUERY_STRIDE), SIDE)  # each window's x
    kept = _nearest_np(strip)[1].ravel()[starts + WINDOW + WINDOW <= 56]  # > a window from 56
    got = strip_reference(strip, reference=PEAK, clipped=clipped)[1]
    np.testing.assert_allclose(float(got[1]), kept.max() - np.median(kept), rtol=1e-4)


def _windows_np(patch: np.ndarray, stride: int) -> np.ndarray:
    positions = range(0, P - WINDOW + 1, stride)
    return np.array([patch[y:y + WINDOW, x:x + WINDOW].ravel() for y in positions
                     for x in positions])


SIDE = (P - WINDOW) // QUERY_STRIDE + 1  # query windows per row


def _nearest_np(strip: torch.Tensor) -> np.ndarray:
    """(N, SIDE, SIDE): each query window's distance to its nearest window of the strip's other
    patches, in the PCA basis of all query windows — the search written out plainly."""
    residuals = strip.double().numpy()
    queries = np.stack([_windows_np(r, QUERY_STRIDE) for r in residuals])  # (N, L, D)
    flat = queries.reshape(-1, WINDOW * WINDOW)
    mean = flat.mean(0)
    _, vectors = np.linalg.eigh((flat - mean).T @ (flat - mean))
    basis = vectors[:, -DIMENSIONS:]
    grids = []
    for k in range(len(residuals)):
        bank = np.concatenate([_windows_np(r, BANK_STRIDE) for j, r in enumerate(residuals)
                               if j != k])
        q, b = (queries[k] - mean) @ basis, (bank - mean) @ basis
        grids.append(np.sqrt(((q[:, None] - b[None]) ** 2).sum(-1)).min(1).reshape(SIDE, SIDE))
    return np.stack(grids)


@pytest.mark.parametrize("reference", list(METHODS))
def test_scores_equal_a_plain_numpy_nearest_window_search(reference):
    strip = _weave(3, period=6.0, contrast=0.05, seed=8)
    strip[1, 20:26, 30:36] += 0.1
    expected = []
    for nearest in _nearest_np(strip):
        if reference == "strip":  # the 3×3 mean of neighbouring windows, then the max
            padded = np.pad(nearest, 1)  # avg_pool2d counts the zero padding
            smoothed = sum(padded[i:i + SIDE, j:j + SIDE] for i in range(3) for j in range(3))
            expected.append((smoothed / 9).max())
        else:  # strip_peak: the unsmoothed max above the patch's median window
            expected.append(nearest.max() - np.median(nearest))
    np.testing.assert_allclose(strip_reference(strip, reference=reference)[1].numpy(), expected,
                               rtol=1e-4)


def test_a_bank_leaves_the_copies_out_and_a_layout_scores_each_strip_on_its_own():
    # As a validation set holds them: clean patches, and copies of them with a defect (bank
    # False). A copy lies where its original does, so it is never compared with it.
    clean = _weave(4, period=6.0, contrast=0.05, seed=6)
    copies = clean.clone()
    copies[:, 20:26, 20:26] += 0.15  # every copy has a knot, as every synthetic copy has one
    residuals = torch.cat([clean, copies])
    corners = np.array([(x, 0) for x in range(0, 4 * P, P)] * 2)
    bank = np.array([True] * 4 + [False] * 4)
    scores = strip_reference(residuals, corners, bank=bank, reference=PEAK)[1]
    assert float(scores[4:].min()) > 1.5 * float(scores[:4].max())
    # Two strips in one set: each scored as on its own; a strip of one patch gets NaN.
    other = _weave(3, period=9.0, contrast=0.1, seed=7)
    lone = _weave(1, period=6.0, contrast=0.05, seed=9)
    layout = StripLayout(np.array([0] * 8 + [1] * 3 + [2]),
                         np.concatenate([corners, [(0, 0), (P, 0), (2 * P, 0), (0, 0)]]),
                         np.concatenate([bank, [True] * 4]))
    together = layout_scores(torch.cat([residuals, other, lone]), layout, reference=PEAK)
    np.testing.assert_allclose(together[:8], scores.numpy(), rtol=1e-6)
    np.testing.assert_allclose(together[8:11], strip_reference(other, reference=PEAK)[1].numpy(),
                               rtol=1e-6)
    assert np.isnan(together[11]) and np.isfinite(together[:11]).all()
    assert layout.lonely(P, P) == (2, (0, 0))  # the strip of one patch, by strip and corner
    assert StripLayout(layout.strips[:11], layout.corners[:11], layout.bank[:11]).lonely(P, P) \
        is None
    with pytest.raises(ValueError, match=r"places 12 patches, but 11 were scored"):
        layout_scores(torch.cat([residuals, other]), layout, reference=PEAK)


def test_patches_that_overlap_the_scored_one_are_left_out_of_its_reference():
    # Patches cut at half the patch size: the knot of patch 4 lies in patch 3 or 5 too, so with
    # them as references it would match itself.
    strip = _weave(1, period=6.0, contrast=0.05, seed=4)[0]
    wide = torch.cat([strip] + [_weave(1, period=6.0, contrast=0.05, seed=5 + i)[0]
                                for i in range(4)], 1)  # (P, 5P)
    wide[40:46, 150:156] += 0.15  # at x 150..156: inside the patches at x 96 and 128
    corners = np.array([(x, 0) for x in range(0, 4 * P + 1, P // 2)])
    patches = torch.stack([wide[:, x:x + P] for x, _ in corners])
    blind = strip_reference(patches, reference=PEAK)[1]  # as if none overlapped
    seen = strip_reference(patches, corners, reference=PEAK)[1]
    knotted = [k for k, (x, _) in enumerate(corners) if x <= 150 and x + P >= 156]
    clean = [k for k in range(len(corners)) if k not in knotted]
    assert float(seen[knotted].min()) > 2 * float(seen[clean].max())
    assert float(blind[knotted].min()) < float(seen[knotted].min()) / 2  # it matched itself


@pytest.mark.parametrize(("residuals", "kwargs", "message"), [
    (torch.zeros(1, P, P), {}, r"at least 2 patches of one strip, got 1"),
    (torch.zeros(4, P), {}, r"must have shape \(N, H, W\), got \(4, 64\)"),
    (torch.zeros(4, P, P), {"window": 80}, r"window=80, dimensions=32 are invalid for 64×64"),
    (torch.zeros(4, P, P), {"window": 4, "dimensions": 17}, r"1 ≤ dimensions ≤ window²"),
    (torch.zeros(2, P, P), {"corners": np.array([(0, 0), (P // 2, 0)])},
     r"the patch at \(0, 0\) has nothing to be compared with: every other patch of its strip "
     r"shares pixels with it.*stride of at "
     r"least the patch size \(64\)"),
    (torch.zeros(2, P, P), {"corners": np.zeros((3, 2))}, r"corners must have shape \(2, 2\)"),
    (torch.zeros(3, P, P), {"bank": np.array([True, False, False])},
     r"patch 0 has nothing to be compared with: every other bank patch of its strip shares "
     r"pixels with it, or there is none.*a bank of at least one other patch"),
    (torch.zeros(3, P, P), {"bank": np.ones(2, bool)}, r"bank must be a bool mask of shape \(3,\)"),
    (torch.zeros(3, P, P), {"reference": "none"},
     r"reference='none' is not a strip reference; allowed: strip, strip_peak, strip_fabric"),
    (torch.zeros(3, P, P), {"clipped": torch.zeros(3, P - 1, dtype=torch.bool)},
     r"clipped must have shape \(patches, width\) \(3, 64\) for residuals \(3, 64, 64\), "
     r"got \(3, 63\)"),
    (torch.zeros(3, P, P), {"clipped": torch.zeros(2, P, dtype=torch.bool),
                            "reference": "strip"},
     r"clipped must have shape \(patches, width\) \(3, 64\).*got \(2, 64\)"),
])
def test_bad_input_is_one_clear_error(residuals, kwargs, message):
    with pytest.raises(ValueError, match=message):
        strip_reference(residuals, **{"reference": PEAK, **kwargs})


def test_a_strip_can_be_referenced_only_with_a_disjoint_patch_for_every_patch():
    assert lonely_patch(np.array([(0, 0), (P, 0)]), P, P) is None
    assert lonely_patch(np.array([(0, 0)]), P, P) == (0, 0)
    assert lonely_patch(np.array([(0, 0), (P // 2, 0)]), P, P) == (0, 0)
    assert lonely_patch(np.array([(0, 0), (P // 2, 0), (P, 0)]), P, P) == (P // 2, 0)
    assert lonely_patch(np.array([(x, 0) for x in range(0, 2 * P, P // 2)]), P, P) is None
    assert lonely_patch(np.array([(0, 0), (0, P)]), P, P) is None  # rows of patches count too

