"""Ranking and the end-of-search text, on Ray's own ``Result`` objects; settings validation."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from ray.air.result import Result
from ray.tune import Checkpoint

from search.fidelity import LOW, MIN_TRIALS
from search.objective import (
    DEFAULT_WITH_LABELS,
    MIN_REAL_DEFECTS,
    ObjectiveError,
    combine,
    resolve,
)
from search.report import format_summary, summarize
from search.settings import REAL_DEFAULTS, SYNTHETIC_DEFAULTS, SearchSettings
from vae.config import ConfigError


def _result(tmp_path, trial_id: str, aurocs: list[float], nonfinite_at: int | None = None,
            config: dict | None = None, real: list[float] | None = None,
            objective: str = "synthetic", extra: dict | None = None) -> Result:
    """A trial's rows as the trainable reports them (``val/objective`` from ``objective``)."""
    rows, checkpoints = [], []
    for epoch, auroc in enumerate(aurocs, start=1):
        bad = epoch == nonfinite_at
        figures = {"val/auroc": auroc}
        if real is not None:
            figures["val/real_auroc"] = real[epoch - 1]
        value = combine(objective, auroc, figures.get("val/real_auroc", math.nan))
        row = {"epoch": epoch, "val/objective": math.nan if bad else value,
               **{k: math.nan if bad else v for k, v in figures.items()}, "val/mse": 0.01,
               "nonfinite": int(bad), "trial_id": trial_id, **(extra or {})}
        rows.append(row)
        if not bad:
            directory = tmp_path / trial_id / f"checkpoint_{epoch:06d}"
            directory.mkdir(parents=True)
            checkpoints.append((Checkpoint.from_directory(str(directory)), row))
    last = {**rows[-1], "config": config or {"model.latent_dim": 8}}
    return Result(metrics=last, checkpoint=checkpoints[-1][0] if checkpoints else None,
                  error=None, path=str(tmp_path / trial_id),
                  metrics_dataframe=pd.DataFrame(rows), best_checkpoints=checkpoints)


def test_ranking_uses_each_trials_best_epoch_and_its_checkpoint(tmp_path):
    summary = summarize([_result(tmp_path, "a", [0.6, 0.9, 0.7]),
                         _result(tmp_path, "b", [0.8, 0.85])])
    winner = summary.winner
    assert winner.trial_id == "a" and winner.best_objective == 0.9 and winner.best_epoch == 2
    assert winner.checkpoint_path.endswith("a/checkpoint_000002")
    assert [t.trial_id for t in summary.trials] == ["a", "b"]


def test_a_trial_that_went_nonfinite_is_never_ranked_even_after_good_epochs(tmp_path):
    summary = summarize([_result(tmp_path, "nan", [0.99, 0.5], nonfinite_at=2),
                         _result(tmp_path, "ok", [0.6, 0.7])])
    assert summary.winner.trial_id == "ok"
    (bad,) = [t for t in summary.trials if t.trial_id == "nan"]
    assert bad.status == "nonfinite" and not bad.ranked
    assert summary.count("nonfinite") == 1


def test_no_winner_when_every_trial_went_nonfinite(tmp_path):
    summary = summarize([_result(tmp_path, "x", [0.0], nonfinite_at=1)])
    assert summary.winner is None
    assert "nothing to pick" in format_summary(summary, ["model.latent_dim"])


def test_the_summary_text_lists_top_trials_winner_config_and_next_commands(tmp_path):
    summary = summarize([_result(tmp_path, "a", [0.7], config={"model.latent_dim": 64}),
                         _result(tmp_path, "b", [0.8], config={"model.latent_dim": 16})])
    text = format_summary(summary, ["model.latent_dim"], next_commands=["aitexvae pull"])
    assert "Top 2 trials by best val/objective (synthetic)" in text
    assert text.index(" b ") < text.index(" a ")  # best first
    assert "Winner: trial b, val/objective 0.8000 (synthetic) at epoch 1" in text
    assert "Proxy fidelity" not in text  # no real labels, nothing to compare
    assert "model.latent_dim = 16" in text
    assert text.rstrip().endswith("aitexvae pull")
    assert "scorer:" not in text  # a fixed scorer: nothing was chosen


def test_the_summary_names_the_scorer_the_winner_chose(tmp_path):
    from vae.score.scorers import NAMES, STRIP_REFERENCE

    chosen = {"val/scorer_index": float(NAMES.index(STRIP_REFERENCE)),
              "val/scorers_compared": float(len(NAMES))}
    text = format_summary(summarize([_result(tmp_path, "a", [0.7], extra=chosen)]), [])
    assert f"scorer: strip_reference/fabric (the best of {len(NAMES)} compared" in text


def test_settings_defaults_follow_the_data():
    synthetic = SearchSettings()
    assert (synthetic.image_size, synthetic.num_samples, synthetic.max_epochs) == \
        tuple(SYNTHETIC_DEFAULTS.values())
    assert synthetic.data_config().patch_size == 64
    assert synthetic.grace_period == synthetic.max_epochs // 4  # ASHA waits a quarter
    assert SearchSettings(max_epochs=2).grace_period == 1
    real = SearchSettings(data_root="/data/aitex", data_format="aitex")
    assert real.image_size == REAL_DEFAULTS["image_size"]
    assert SearchSettings(data_root="/data/aitex") == real  # a root alone means AITEX
    assert SearchSettings().data_format == "synthetic"
    assert real.base_config()["model.image_size"] == 256


@pytest.mark.parametrize("changes, message", [
    ({"image_size": 40}, "--image-size=40"),
    ({"grace_period": 9, "max_epochs": 4}, "--grace-period=9 exceeds --max-epochs=4"),
    ({"gpus_per_trial": 1.5}, "--gpus-per-trial=1.5"),
    ({"gpus_per_trial": 2}, "--gpus-per-trial=2 is invalid: a trial trains on one GPU; use 1, or "
                            "a fraction"),
    ({"cpus_per_trial": 0}, "--cpus-per-trial=0"),
    ({"scheduler": "pbt"}, "--scheduler='pbt'"),
    ({"search_alg": "bohb"}, "--search-alg='bohb'"),
    ({"data_root": "/x", "data_format": "synthetic"}, "--data-root='/x' with the synthetic set"),
    ({"data_format": "folder"}, "--data-root: data.root is required for data.format='folder'"),
    ({"name": "a/b"}, "--name='a/b'"),
    ({"name": "it's"}, "--name=\"it's\" is invalid; allowed: a non-empty folder name without '/', "
                       "quotes or backticks"),
    ({"space_file": "/no/such.yaml"}, "--space='/no/such.yaml': no such file"),
])
def test_settings_reject_bad_values_naming_the_flag(changes, message):
    with pytest.raises(ConfigError) as error:
        SearchSettings(**changes)
    assert message in str(error.value)


def test_resume_keeps_the_saved_search_and_takes_only_runtime_flags():
    saved = SearchSettings(name="s", num_samples=30, seed=4).resolved()
    resumed = saved.for_resume({"address": "auto", "num_samples": 2, "seed": 9})
    assert (resumed.num_samples, resumed.seed, resumed.address) == (30, 4, "auto")
    assert SearchSettings.from_dict(saved.to_dict()) == saved


def test_the_real_objective_ranks_by_the_real_figure_and_its_best_epoch(tmp_path):
    trials = [_result(tmp_path / "r", "syn-best", [0.95, 0.96], real=[0.60, 0.62],
                      objective="real"),
              _result(tmp_path / "r", "real-best", [0.70, 0.72], real=[0.80, 0.75],
                      objective="real")]
    winner = summarize(trials).winner
    assert winner.trial_id == "real-best" and winner.best_objective == 0.80
    assert winner.best_epoch == 1 and winner.checkpoint_path.endswith("checkpoint_000001")
    blend = summarize([_result(tmp_path / "b", "x", [0.9], real=[0.5], objective="blend")])
    assert blend.winner.best_objective == pytest.approx(0.7)


def test_objective_resolution_follows_the_labels_and_refuses_real_without_them():
    assert resolve("auto", real_defects=0) == "synthetic"
    assert resolve("auto", real_defects=MIN_REAL_DEFECTS) == DEFAULT_WITH_LABELS == "real"
    assert resolve("auto", real_defects=MIN_REAL_DEFECTS - 1) == "blend"  # too few to rank by
    assert resolve("synthetic", real_defects=50) == "synthetic"
    for choice in ("real", "blend"):
        with pytest.raises(ObjectiveError, match=f"--objective {choice} needs labelled defects"):
            resolve(choice, real_defects=0)
    with pytest.raises(ConfigError, match=r"--objective='best' is invalid; choose one of"):
        SearchSettings(objective="best")


def test_proxy_fidelity_is_over_finished_trials_and_warns_when_low(tmp_path):
    # Synthetic and real figures rank these four finished trials in opposite orders.
    opposite = [_result(tmp_path / "o", f"t{i}", [0.6 + 0.1 * i], real=[0.9 - 0.1 * i])
                for i in range(MIN_TRIALS)]
    broken = _result(tmp_path / "o", "nan", [0.99, 0.5], real=[0.99, 0.5], nonfinite_at=2)
    summary = summarize([*opposite, broken])
    fidelity = summary.fidelity
    assert fidelity.trials == MIN_TRIALS  # the non-finite trial is not counted
    assert fidelity.spearman == pytest.approx(-1.0) and fidelity.low
    text = format_summary(summary, ["model.latent_dim"])
    assert "Spearman -1.00" in text and "WARNING: low" in text and "--objective real" in text
    agree = summarize([_result(tmp_path / "a", f"t{i}", [0.6 + 0.1 * i], real=[0.5 + 0.1 * i])
                       for i in range(MIN_TRIALS)]).fidelity
    assert agree.spearman == pytest.approx(1.0) and not agree.low and LOW < 1.0
    few = summarize(opposite[:MIN_TRIALS - 1]).fidelity
    assert math.isnan(few.spearman) and "not measured" in few.describe("synthetic")


def test_settings_saved_before_the_new_fields_resume_as_that_search_ran():
    old = SearchSettings(data_root="/data/f", data_format="folder", image_size=32).to_dict()
    for key in ("resize", "objective", "val_defects"):
        old.pop(key)
    restored = SearchSettings.from_dict(old)
    assert (restored.resize, restored.objective, restored.val_defects) == (0, "synthetic",
                                                                          "builtin")
    assert restored.base_config()["model.input_resize"] == 0  # native, as it was trained
    assert SearchSettings(data_root="/data/f", data_format="folder",
                          image_size=32).data_config().resize == 32  # a new search resizes


def test_one_rule_each_for_the_image_size_and_the_data_format_named_as_flags():
    from vae.config import ModelConfig

    for value in (40, 16, 64.0):  # the model's rule, worded for the flag
        with pytest.raises(ConfigError) as model_error:
            ModelConfig(image_size=value)
        with pytest.raises(ConfigError) as flag_error:
            SearchSettings(image_size=value)
        assert str(flag_error.value) == str(model_error.value).replace("model.image_size",
                                                                      "--image-size")
    with pytest.raises(ConfigError, match=r"^--format: data.format='mvtec' is invalid; choose "):
        SearchSettings(data_root="/data", data_format="mvtec")
