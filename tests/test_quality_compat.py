"""Models saved before the quality knobs existed (format version 1) load and score as before;
the training stride; importances rank the one knob that drives the objective first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import vae
from search.importance import format_importances, param_importances
from tests.support.checkpoints import make_model, tiny_config, validation_set
from vae.data import DataConfig, load_splits
from vae.io import CONFIG_FILE
from vae.score import score_patches
from vae.score.reference import signed_residuals, strip_reference, strip_scores

# The complete config of a version-1 model folder, exactly as the code before version 2 wrote it.
VERSION_1_KEYS = {
    "model": ["covariance", "dropout", "image_size", "in_channels", "latent_dim",
              "output_activation", "rank"],
    "loss": ["bce_weight", "fft_weight", "kl_weight", "mse_weight"],
    "train": ["batch_size", "grad_clip_norm", "learning_rate", "num_epochs", "precision", "seed",
              "weight_decay"],
    "score": ["map", "reduction", "smooth_sigma", "topk_fraction"]}


def _saved_as_older(model, folder: Path, older) -> object:
    """``model`` saved to ``folder``, its config document rewritten by ``older``, loaded back."""
    vae.save(model, folder)
    document = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps(older(document)))
    return vae.load(folder)


def test_a_version_1_model_folder_loads_and_scores_identically(tmp_path):
    model = make_model(tiny_config(), seed=7)
    images, _ = validation_set()
    expected, _ = score_patches(model, images, keep_maps=False)
    loaded = _saved_as_older(model, tmp_path / "v1", lambda document: {
        "format_version": 1,
        "config": {section: {key: document["config"][section][key] for key in names}
                   for section, names in VERSION_1_KEYS.items()}})
    assert loaded.config == model.config  # the new keys' defaults are what version 1 did
    rescored, _ = score_patches(loaded, images, keep_maps=False)
    np.testing.assert_array_equal(rescored, expected)


def _without_reference(document: dict) -> dict:
    del document["config"]["score"]["reference"]
    return {**document, "format_version": 3}


def test_a_version_3_model_folder_without_score_reference_scores_each_patch_alone(tmp_path):
    model = make_model(tiny_config(), seed=3)
    images, _ = validation_set()
    expected, _ = score_patches(model, images, keep_maps=False)
    loaded = _saved_as_older(model, tmp_path / "v3", _without_reference)
    assert loaded.config.score.reference == "none" and loaded.config == model.config
    np.testing.assert_array_equal(score_patches(loaded, images, keep_maps=False)[0], expected)


def test_a_version_4_strip_reference_model_scores_with_the_smoothed_max_it_was_validated_with(
        tmp_path):
    # Format 5 added "strip_peak"; a version-4 folder's "strip" keeps the 3×3-smoothed max
    # (pinned against NumPy in test_score_reference), and is not silently upgraded.
    model = make_model(tiny_config(**{"score.reference": "strip"}), seed=3)
    images, _ = validation_set(normal=4, defect=2)
    loaded = _saved_as_older(model, tmp_path / "v4",
                             lambda document: {**document, "format_version": 4})
    assert loaded.config == model.config and loaded.config.score.reference == "strip"
    scores = strip_scores(loaded, images, reference=loaded.config.score.reference)[0]
    residuals, _ = signed_residuals(model, images)
    smoothed = strip_reference(residuals, reference="strip")[1].numpy()
    peak = strip_reference(residuals, reference="strip_peak")[1].numpy()
    np.testing.assert_array_equal(scores, smoothed)
    assert not np.allclose(scores, peak)


def test_a_version_5_strip_peak_model_finds_the_background_from_each_patchs_border(tmp_path):
    # Format 6 added "strip_fabric" (the fabric's edge found along the whole strip); a
    # version-5 folder's "strip_peak" keeps finding it from each patch's border only, as its
    # trial was validated: here a clipped line inside patch 1, with what lies left of it,
    # is background to "strip_fabric" and fabric to "strip_peak".
    model = make_model(tiny_config(**{"score.reference": "strip_peak"}), seed=3)
    images, _ = validation_set(normal=4, defect=2)
    images[1, :, :, 4:6] = 255
    loaded = _saved_as_older(model, tmp_path / "v5",
                             lambda document: {**document, "format_version": 5})
    assert loaded.config == model.config and loaded.config.score.reference == "strip_peak"
    scores = strip_scores(loaded, images, reference=loaded.config.score.reference)[0]
    residuals, clipped = signed_residuals(model, images)
    assert np.flatnonzero(clipped[1]).tolist() == [4, 5]
    blind = strip_reference(residuals, reference="strip_peak")[1].numpy()
    fabric = strip_reference(residuals, reference="strip_fabric", clipped=clipped)[1].numpy()
    np.testing.assert_array_equal(scores, blind)  # no run from a border: nothing left out
    assert not np.allclose(scores, fabric)


def test_an_unknown_format_version_is_refused_naming_the_readable_ones(tmp_path):
    folder = vae.save(make_model(tiny_config(), seed=0), tmp_path / "m")
    document = json.loads((folder / CONFIG_FILE).read_text())
    document["format_version"] = 7
    (folder / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(ValueError,
                       match=r"format_version 7 is not supported.*\[1, 2, 3, 4, 5, 6\]"):
        vae.load(folder)


def test_a_training_stride_overlaps_training_patches_only(tmp_path, monkeypatch):
    monkeypatch.setenv("AITEXVAE_HOME", str(tmp_path))
    plain = load_splits(DataConfig(patch_size=32))
    dense = load_splits(DataConfig(patch_size=32, train_stride=16))
    assert len(dense.train) > 1.5 * len(plain.train)
    assert set(np.unique(dense.train.x % 32)) >= {0, 16}
    for name in ("val", "test"):  # exactly the same patches as without it
        ours, theirs = getattr(dense, name), getattr(plain, name)
        assert np.array_equal(ours.images, theirs.images)
        assert np.array_equal(ours.x, theirs.x) and np.array_equal(ours.labels, theirs.labels)


def test_the_training_stride_is_validated():
    from vae.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.train_stride=40 is invalid.*\[1, 32\]"):
        DataConfig(patch_size=32, train_stride=40)
    with pytest.raises(ConfigError, match=r"data.train_stride=20 is invalid; allowed: a divisor "
                                          r"of data.stride=32"):
        DataConfig(patch_size=32, train_stride=20)


def test_default_tiles_follow_the_image_size_and_scorer_keys_need_a_fixed_selection():
    from search.space import Choice, Fixed, SearchSpace, SpaceError, fit_to_image_size
    from search.space_check import check_space

    space = SearchSpace()
    assert fit_to_image_size(space, 256).params["model.tile_size"] == Choice((32, 64))
    assert fit_to_image_size(space, 96).params["model.tile_size"] == Fixed(32)
    assert fit_to_image_size(space, 80).params["model.tile_size"] == Fixed(0)
    check_space(fit_to_image_size(space, 80), {"model.image_size": 80})
    written = space.with_overrides({"model.tile_size": Fixed(64)})
    assert fit_to_image_size(written, 96) is written  # a user's value is never adapted
    scorers = space.with_overrides({"score.map": Choice(("l2", "msgms"))})
    with pytest.raises(SpaceError, match=r"\['score.map'\] are searched while score.select"):
        check_space(scorers, {"model.image_size": 32})
    check_space(scorers.with_overrides({"score.select": Fixed("fixed")}),
                {"model.image_size": 32})


def test_importances_rank_the_only_knob_that_drives_the_objective_first():
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(24):
        config = {"model.latent_dim": int(rng.choice([8, 16, 32])),
                  "model.dropout": float(rng.uniform(0.0, 0.5)),
                  "train.learning_rate": float(rng.uniform(1e-4, 3e-3)),
                  "loss.mse_weight": 1.0, "loss.bce_weight": 0.0,
                  "loss.fft_weight": float(rng.choice([0.0, 0.02]))}
        objective = 0.6 + 0.6 * config["train.learning_rate"] * 100 + rng.normal(0, 0.002)
        trials.append((config, objective))
    searched = list(trials[0][0])
    importances = param_importances(trials, searched)
    assert list(importances)[0] == "train.learning_rate"
    assert importances["train.learning_rate"] > 0.8
    assert set(importances) == {"model.latent_dim", "model.dropout", "train.learning_rate",
                                "loss.mix"}
    assert sum(importances.values()) == pytest.approx(1.0)
    lines = format_importances(importances, 24)
    assert "24 ranked trials" in lines[0] and "train.learning_rate" in lines[1]
    # Too few finished trials: nothing to say (NaN trials never count).
    assert param_importances(trials[:3] + [(trials[3][0], float("nan"))], searched) == {}
