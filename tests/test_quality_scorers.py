"""The structural and normalised scorers against straightforward NumPy/SciPy references, and
the "best scorer" selection: what a trial reports is what its checkpoint (and a pulled model)
scores."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

import vae
from search.trainable import validate
from vae import keys
from vae.config import ScoreConfig, VAEConfig
from vae.score import image_auroc, score_patches
from vae.score.maps import residual_maps
from vae.score.scorers import NAMES, SCORERS, STRIP_REFERENCE, candidates, pick_best, scorer_name
from vae.score.similarity import GMS_C, SSIM_C1, SSIM_C2, msgms_map, ssim_map


def _pair(seed: int = 0, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((2, size, size)), (0, 1.0, 1.0))
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    y[:, 10:14, 20:30] = 0.9  # a "defect" the reconstruction does not have
    return x.astype(np.float32), y.astype(np.float32)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    # Our blur is scipy's gaussian_filter with mode="nearest" and truncate=4 (vae/score/blur.py).
    return np.stack([ndimage.gaussian_filter(m, sigma, mode="nearest", truncate=4.0) for m in a])


def test_ssim_matches_the_formula_with_scipy_filters():
    x, y = _pair()
    mu_x, mu_y = _blur(x, 1.5), _blur(y, 1.5)
    var_x = _blur(x * x, 1.5) - mu_x**2
    var_y = _blur(y * y, 1.5) - mu_y**2
    cov = _blur(x * y, 1.5) - mu_x * mu_y
    reference = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_x**2 + mu_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2))
    ours = ssim_map(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-4)
    assert ssim_map(torch.from_numpy(x), torch.from_numpy(x)).numpy() == pytest.approx(1.0,
                                                                                      abs=1e-4)


def test_single_scale_gms_matches_prewitt_gradients_from_scipy():
    x, y = _pair(1)
    prewitt = np.array([[1, 0, -1]] * 3, dtype=np.float64) / 3.0

    def magnitude(a):
        return np.sqrt(np.stack([ndimage.correlate(m, prewitt, mode="nearest") ** 2
                                 + ndimage.correlate(m, prewitt.T, mode="nearest") ** 2
                                 for m in a.astype(np.float64)]))

    gx, gy = magnitude(x), magnitude(y)
    reference = (2 * gx * gy + GMS_C) / (gx**2 + gy**2 + GMS_C)
    ours = msgms_map(torch.from_numpy(x), torch.from_numpy(y), scales=(1,)).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_msgms_similarity_is_one_for_a_perfect_reconstruction_and_its_map_peaks_at_the_defect():
    x, y = _pair(2)
    same = msgms_map(torch.from_numpy(x), torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(same, 1.0, atol=1e-6)
    config = ScoreConfig(map="msgms", smooth_sigma=1.0, reduction="max")
    maps = residual_maps(torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None], config)
    peak = np.unravel_index(int(maps[0].argmax()), maps[0].shape)
    assert 8 <= peak[0] <= 16 and 18 <= peak[1] <= 32


def test_signed_smooth_and_image_normalisation_match_numpy():
    x, y = _pair(3)
    config = ScoreConfig(map="signed_smooth", smooth_sigma=2.0, normalize="image")
    ours = residual_maps(torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None],
                         config).numpy()
    signed = np.abs(_blur((x - y).astype(np.float64), 2.0))
    flat = signed.reshape(2, -1)
    mean, std = flat.mean(1)[:, None, None], flat.std(1, ddof=1)[:, None, None]
    np.testing.assert_allclose(ours, (signed - mean) / (std + 1e-6), rtol=1e-3, atol=1e-3)


def test_the_scorer_set_and_its_names():
    assert list(candidates(ScoreConfig())) == ["l2_smooth/topk_mean"]  # "fixed": only itself
    chosen = candidates(ScoreConfig(select="best", topk_fraction=0.01))
    assert list(chosen) == list(NAMES) == [*SCORERS, STRIP_REFERENCE] and len(chosen) >= 7
    assert all(c.topk_fraction == 0.01 for c in chosen.values())
    assert {scorer_name(c) for c in chosen.values()} == set(NAMES)
    assert [c.reference for c in chosen.values()] == ["none"] * len(SCORERS) + ["strip_fabric"]
    # "strip" and "strip_peak" (model formats 4, 5) are no longer compared, but a model that
    # chose one keeps its name.
    assert scorer_name(ScoreConfig(reference="strip")) == "strip_reference" != STRIP_REFERENCE
    assert scorer_name(ScoreConfig(reference="strip_peak")) == "strip_reference/peak" \
        != STRIP_REFERENCE
    assert list(candidates(ScoreConfig(select="best"), reference=False)) == list(SCORERS)
    assert list(candidates(ScoreConfig(select="best_per_patch"))) == list(SCORERS)
    assert pick_best({"a": 0.7, "b": float("nan"), "c": 0.9, "d": 0.9}) == "c"


def test_the_best_scorers_auroc_is_what_the_saved_model_scores(tmp_path):
    from tests.support.checkpoints import make_model, tiny_config, validation_set

    config = tiny_config(**{"score.select": "best"})
    model = make_model(config, seed=3)
    images, labels = validation_set(normal=8, defect=8, seed=1)
    metrics, scores, _, scorer = validate(model, torch.from_numpy(images), labels, config)
    assert metrics[keys.VAL_SCORERS_COMPARED] == len(SCORERS)
    name = list(SCORERS)[int(metrics[keys.VAL_SCORER_INDEX])]
    assert scorer_name(scorer) == name
    assert metrics[keys.VAL_AUROC] == max(metrics[f"{keys.VAL_AUROC_BY_SCORER}/{n}"]
                                          for n in SCORERS)
    assert metrics[keys.VAL_AUROC] == pytest.approx(image_auroc(scores, labels))
    # What the trainable does before saving: the checkpoint's config names the winner ...
    model.config = replace(config, score=scorer)
    folder = vae.save(model, tmp_path / "best")
    stored = json.loads((folder / "config.json").read_text())["config"]["score"]
    assert (stored["map"], stored["reduction"], stored["normalize"]) == (
        scorer.map, scorer.reduction, scorer.normalize)
    # ... and the loaded model scores exactly as the trial reported.
    rescored, _ = score_patches(vae.load(folder), images, keep_maps=False)
    np.testing.assert_array_equal(rescored, scores)
    assert image_auroc(rescored, labels) == metrics[keys.VAL_AUROC]


def test_score_knobs_are_validated():
    from vae.config import ConfigError

    with pytest.raises(ConfigError, match=r"score.normalize 'pixel'.*\['none', 'image'\]"):
        VAEConfig().with_overrides({"score.normalize": "pixel"})
    with pytest.raises(ConfigError, match=r"score.map 'gms'.*'msgms'"):
        VAEConfig().with_overrides({"score.map": "gms"})
