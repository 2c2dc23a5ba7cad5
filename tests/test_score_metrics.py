"""Metrics: oracle / random / inverted maps, AUPRO against a hand-computed case, F1-max,
fabric-matched AUROC, and NaN (not a crash) on one-class inputs."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vae.score import PixelSample, aupro, evaluate_scores, f1_max, image_auroc, pixel_auroc


def _masks(n=6, size=32, seed=0) -> np.ndarray:
    """Square and blob defects in some images; the rest defect-free."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(0, n, 2):
        y, x, h, w = rng.integers(0, size - 8, 2).tolist() + rng.integers(1, 8, 2).tolist()
        masks[i, y:y + h, x:x + w] = True
        masks[i, 0, 0] = True  # a second, one-pixel region
    return masks


def test_oracle_map_is_perfect_random_is_chance_inverted_is_zero():
    masks = _masks()
    oracle = masks.astype(np.float32)
    assert pixel_auroc(oracle, masks) == 1.0
    assert aupro(oracle, masks) == pytest.approx(1.0, abs=1e-12)
    inverted = 1.0 - oracle
    assert pixel_auroc(inverted, masks) == 0.0
    assert aupro(inverted, masks) == pytest.approx(0.0, abs=1e-12)
    masks = np.zeros((30, 32, 32), bool)  # 8×8 defects: PRO of a random map stays close to FPR
    for i, (y, x) in enumerate(np.random.default_rng(2).integers(0, 24, (30, 2))):
        masks[i, y:y + 8, x:x + 8] = True
    noise = np.random.default_rng(1).random(masks.shape)
    assert pixel_auroc(noise, masks) == pytest.approx(0.5, abs=0.02)
    # PRO ≈ FPR for an uninformative map, so the normalised area up to 0.3 is ≈ 0.3 / 2 / 0.3
    assert aupro(noise, masks, fpr_limit=0.3) == pytest.approx(0.15, abs=0.02)


def test_aupro_hand_computed_case():
    # Regions: A = {(0,0), (0,1)} scores 0.9, 0.5; B = {(1,3)} score 0.7; 5 normal pixels.
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], bool)
    amap = np.array([[0.9, 0.5, 0.8, 0.6], [0.1, 0.2, 0.3, 0.7]])
    # Descending: 0.9 A (PRO .25), 0.8 N (FPR .2), 0.7 B (PRO .75), 0.6 N (FPR .4), 0.5 A (PRO 1).
    # Area to 0.3: 0.2·0.25 + 0.1·0.75 = 0.125 → /0.3. Area to 1: 0.05 + 0.2·0.75 + 0.6·1 = 0.8.
    assert aupro([amap], [mask], fpr_limit=0.3) == pytest.approx(0.125 / 0.3, abs=1e-12)
    assert aupro([amap], [mask], fpr_limit=1.0) == pytest.approx(0.8, abs=1e-12)
    assert aupro([amap], [mask], fpr_limit=0.2) == pytest.approx(0.25, abs=1e-12)


def test_aupro_regions_are_eight_connected_and_ties_move_together():
    # (0,1) and (1,2) touch only diagonally: with 8-connectivity one 3-pixel region, so passing
    # the 0.9 pixel gives PRO 1/3 (4-connected it would be a whole 1-pixel region: PRO 1/2).
    mask = np.array([[1, 1, 0], [0, 0, 1]], bool)
    amap = np.array([[0.1, 0.1, 0.5], [0.5, 0.5, 0.9]])
    # Curve (0,0) → (0,1/3); the three tied 0.5 normals move FPR 0 → 1 in one step → (1,1/3).
    assert aupro([amap], [mask], fpr_limit=1.0) == pytest.approx(1 / 3, abs=1e-12)
    assert aupro([amap], [mask], fpr_limit=0.5) == pytest.approx(1 / 3, abs=1e-12)


def test_sampled_pixel_metrics_match_exact_ones():
    masks = _masks(n=8, size=64, seed=3)
    rng = np.random.default_rng(4)
    maps = masks * 0.3 + rng.random(masks.shape)
    exact = PixelSample.from_maps(maps, masks)
    sampled = PixelSample.from_maps(maps, masks, max_normal_pixels=2000, seed=5)
    normal, anomalous, _, _ = sampled.arrays()
    assert normal.size == 2000 and anomalous.size == masks.sum()
    assert sampled.n_normal_seen == (~masks).sum()
    assert exact.auroc() == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert sampled.auroc() == pytest.approx(exact.auroc(), abs=0.02)
    assert sampled.aupro() == pytest.approx(exact.aupro(), abs=0.03)


def test_nan_pixels_are_left_out():
    masks = _masks()
    maps = masks.astype(np.float32)
    maps[:, :, -4:] = np.nan
    assert pixel_auroc(maps, masks) == 1.0


def test_f1_max_matches_brute_force():
    rng = np.random.default_rng(2)
    labels = rng.random(200) < 0.3
    scores = labels * 0.8 + rng.random(200)
    f1, threshold = f1_max(scores, labels)
    best = 0.0
    for t in np.unique(scores):
        pred = scores >= t
        tp = (pred & labels).sum()
        best = max(best, 2 * tp / (pred.sum() + labels.sum()))
    assert f1 == pytest.approx(best, abs=1e-12)
    pred = scores >= threshold
    assert 2 * (pred & labels).sum() / (pred.sum() + labels.sum()) == pytest.approx(f1)


def test_one_class_gives_nan_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert math.isnan(image_auroc([0.1, 0.2], [0, 0]))
        assert all(math.isnan(v) for v in f1_max([0.1, 0.2], [1, 1]))
        assert math.isnan(pixel_auroc(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool)))
        assert math.isnan(aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool)))
    assert "undefined" in caplog.text
    result = evaluate_scores([0.1, 0.2], [0, 0], strips=["a", "b"], fabrics=["f", "f"],
                             maps=np.zeros((2, 4, 4)), masks=np.zeros((2, 4, 4), bool))
    assert math.isnan(result["patch_auroc"]) and math.isnan(result["aupro"])


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        image_auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="one label per score"):
        image_auroc([0.1, 0.2], [0])


def test_evaluate_scores_fabric_matched_and_per_fabric():
    # Strip s1 (fabric A) is defective; s2 (A) and s3 (B) are clean. Clean patches of other
    # strips score low, so the all-normals AUROC looks good; on s1 itself scores overlap.
    scores = np.array([0.9, 0.5, 0.6, 0.4, 0.1, 0.2, 0.1, 0.3, 0.9])
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0])
    strips = np.array(["s1", "s1", "s1", "s1", "s2", "s2", "s3", "s3", "s3"])
    fabrics = np.array(["A", "A", "A", "A", "A", "A", "B", "B", "B"])
    result = evaluate_scores(scores, labels, strips=strips, fabrics=fabrics)
    assert result["n_patches"] == 9 and result["n_anomalous"] == 2 and result["n_normal"] == 7
    assert result["patch_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert result["n_normal_fabric_matched"] == 2
    assert result["patch_auroc_fabric_matched"] == pytest.approx(
        roc_auc_score([1, 1, 0, 0], [0.9, 0.5, 0.6, 0.4]))  # 0.75
    per = result["per_fabric"]
    assert per["A"]["patch_auroc"] == pytest.approx(roc_auc_score(labels[:6], scores[:6]))
    assert per["A"]["patch_auroc_fabric_matched"] == pytest.approx(0.75)
    assert math.isnan(per["B"]["patch_auroc"]) and per["B"]["n_anomalous"] == 0
    assert (result["f1_max"], result["f1_threshold"]) == pytest.approx(f1_max(scores, labels))
    assert "pixel_auroc" not in result
