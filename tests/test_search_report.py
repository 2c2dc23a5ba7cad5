"""Ranking and the end-of-search text, on Ray's own ``Result`` objects; settings validation."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from ray.air.result import Result
from ray.tune import Checkpoint

from search.report import format_summary, summarize
from search.settings import REAL_DEFAULTS, SYNTHETIC_DEFAULTS, SearchSettings
from vae.config import ConfigError


def _result(tmp_path, trial_id: str, aurocs: list[float], nonfinite_at: int | None = None,
            config: dict | None = None) -> Result:
    rows, checkpoints = [], []
    for epoch, auroc in enumerate(aurocs, start=1):
        bad = epoch == nonfinite_at
        row = {"epoch": epoch, "val/auroc": math.nan if bad else auroc, "val/mse": 0.01,
               "nonfinite": int(bad), "trial_id": trial_id}
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
    assert winner.trial_id == "a" and winner.best_auroc == 0.9 and winner.best_epoch == 2
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
    assert "Top 2 trials by best val/auroc" in text
    assert text.index(" b ") < text.index(" a ")  # best first
    assert "Winner: trial b, val/auroc 0.8000 at epoch 1" in text
    assert "model.latent_dim = 16" in text
    assert text.rstrip().endswith("aitexvae pull")


def test_settings_defaults_follow_the_data():
    synthetic = SearchSettings()
    assert (synthetic.image_size, synthetic.num_samples, synthetic.max_epochs) == \
        tuple(SYNTHETIC_DEFAULTS.values())
    assert synthetic.data_config().patch_size == 64
    assert synthetic.grace_period == synthetic.max_epochs // 4  # ASHA waits a quarter
    assert SearchSettings(max_epochs=2).grace_period == 1
    real = SearchSettings(data_root="/data/aitex", data_format="aitex")
    assert real.image_size == REAL_DEFAULTS["image_size"]
    assert real.base_config()["model.image_size"] == 256


@pytest.mark.parametrize("changes, message", [
    ({"image_size": 40}, "--image-size=40"),
    ({"grace_period": 9, "max_epochs": 4}, "--grace-period=9 exceeds --max-epochs=4"),
    ({"gpus_per_trial": 1.5}, "--gpus-per-trial=1.5"),
    ({"cpus_per_trial": 0}, "--cpus-per-trial=0"),
    ({"scheduler": "pbt"}, "--scheduler='pbt'"),
    ({"search_alg": "bohb"}, "--search-alg='bohb'"),
    ({"data_root": "/x"}, "--data-root and --format go together"),
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
