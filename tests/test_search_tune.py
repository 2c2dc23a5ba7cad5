"""Small real searches on a real local Ray (started here, 2 CPUs): metrics, ranking, NaN trials,
and a trial whose worker process is killed mid-training."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import ray
from ray import tune

import vae
from search import launcher
from search.settings import SETTINGS_FILE, SearchSettings
from search.trainable import TrialData
from vae import keys
from vae.config import VAEConfig
from vae.score import image_auroc, score_patches
from vae.score.scorers import SCORERS, score_candidates

pytestmark = pytest.mark.slow

EVERY_METRIC = (keys.EPOCH, keys.VAL_OBJECTIVE, keys.VAL_AUROC, keys.VAL_REAL_AUROC, keys.VAL_MSE, keys.VAL_LOSS, keys.VAL_KL,
                keys.TRAIN_LOSS, keys.TRAIN_MSE, keys.TRAIN_KL,
                keys.TRAIN_IMAGES_PER_S, keys.TRAIN_EPOCH_TIME_S)
# Reported exactly when their weight is not 0 (no flat zeros in MLflow's charts).
WEIGHTED_TERMS = {keys.TRAIN_BCE: "bce_weight", keys.TRAIN_FFT: "fft_weight"}


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    home = tmp_path_factory.mktemp("aitexvae_home")
    previous = os.environ.get("AITEXVAE_HOME")
    os.environ["AITEXVAE_HOME"] = str(home)  # the synthetic set is generated here, not in ~
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    yield
    ray.shutdown()
    if previous is None:
        os.environ.pop("AITEXVAE_HOME", None)
    else:
        os.environ["AITEXVAE_HOME"] = previous


REASSOCIATION = 1e-5  # absolute; the scores compared are ~0.01–1


def _settings(tmp_path, name: str, **changes) -> SearchSettings:
    values = dict(name=name, image_size=32, num_samples=3, max_epochs=2, train_patches=192,
                  scheduler="fifo", storage_path=str(tmp_path / "ray_results"), tracking=False,
                  verbose=0)
    return SearchSettings(**{**values, **changes})


def _rows(result) -> list[dict]:
    return result.metrics_dataframe.to_dict("records")


def _rescore(model, images, layout) -> np.ndarray:
    """The patches scored again as the model's own scorer does, placed in their strips (a
    scorer that references the strip needs them)."""
    return score_candidates(model, images, {"own": model.config.score}, layout=layout)["own"]


def test_small_search_reports_every_metric_and_the_winner_has_the_highest_auroc(local_ray,
                                                                                tmp_path):
    # Optuna's TPE through Ray (its state is pickled into the experiment); random is the default.
    outcome = launcher.search(_settings(tmp_path, "small", search_alg="optuna"))
    assert len(outcome.results) == 3 and outcome.results.num_errors == 0
    best_seen = -1.0
    for result in outcome.results:
        rows = _rows(result)
        assert [r[keys.EPOCH] for r in rows] == [1, 2]
        for row in rows:
            for key in EVERY_METRIC:
                assert math.isfinite(row[key]), (key, row[key])
            loss = VAEConfig().with_overrides(result.config).loss
            for key, weight in WEIGHTED_TERMS.items():
                assert (key in row) == (getattr(loss, weight) > 0), (key, result.config)
            assert row["nonfinite"] == 0
        assert set(result.config) <= set(VAEConfig.valid_keys())
        best_seen = max(best_seen, *(r[keys.OBJECTIVE] for r in rows))
    winner = outcome.summary.winner
    assert winner is not None and winner.best_objective == pytest.approx(best_seen)
    assert outcome.unfinished == 0

    # The winner's checkpoint rebuilds the model, which scores the validation patches exactly
    # as the trial did (the AUROC it reported comes from these scores).
    checkpoint = winner.checkpoint_path
    for name in ("model.safetensors", "config.json", "state.json", "val_scores.npy"):
        assert os.path.isfile(os.path.join(checkpoint, name)), name
    # Adam's state only where resuming may need it: the trial's last keep_checkpoints + 1.
    window = 2 + 1
    for result in outcome.results:
        last = _rows(result)[-1][keys.EPOCH]
        kept = {c.path for c, _ in result.best_checkpoints} | {result.checkpoint.path}
        for path in kept:
            epoch = json.loads(Path(path, "state.json").read_text())["epoch"]
            assert os.path.isfile(os.path.join(path, "optimizer.pt")) == (
                epoch > last - window), path
    state = json.loads(Path(checkpoint, "state.json").read_text())
    assert state["epoch"] == winner.best_epoch
    model = vae.load(checkpoint)
    val = outcome.prepared.splits.val
    scores = _rescore(model, val.images, TrialData.from_splits(outcome.prepared.splits).val_layout)
    # Equal up to float reassociation: the strip reference's matrix products run on however
    # many threads the process has (the trial had one CPU), per-patch scorers bit for bit.
    # strip_peak's max − median of two near distances keeps that error absolute (≈1e-6).
    np.testing.assert_allclose(scores, np.load(os.path.join(checkpoint, "val_scores.npy")),
                               rtol=1e-5, atol=REASSOCIATION)
    assert image_auroc(scores, val.labels) == pytest.approx(winner.best_metrics[keys.VAL_AUROC])
    saved = json.loads(Path(outcome.prepared.experiment_path, SETTINGS_FILE).read_text())
    assert saved["settings"]["num_samples"] == 3 and "model.latent_dim" in saved["searched_keys"]


def test_a_trial_that_goes_nan_stops_at_its_first_nonfinite_report_and_is_never_best(
        local_ray, tmp_path):
    space = tmp_path / "space.yaml"
    # lr 1.0 without clipping overflows in the first steps (measured); 1e-3 trains normally.
    # model.tile_size is fixed so the seeded sampler's draws do not depend on that dimension.
    space.write_text("train.learning_rate: {choice: [1.0, 0.001]}\ntrain.grad_clip_norm: 0.0\n"
                     "model.output_activation: none\nloss.mse_weight: 1.0\n"
                     "model.tile_size: 32\n")
    outcome = launcher.search(_settings(tmp_path, "nan", num_samples=3, max_epochs=3, seed=1,
                                        space_file=str(space)))
    by_lr = {}
    for result in outcome.results:
        by_lr.setdefault(result.config["train.learning_rate"], []).append(result)
    assert set(by_lr) == {1.0, 0.001}, "the seeded sampler should draw both learning rates"
    for result in by_lr[1.0]:
        rows = _rows(result)
        assert len(rows) == 1  # one report, then the trial returned: no further epochs
        assert rows[0]["nonfinite"] == 1 and math.isnan(rows[0][keys.VAL_AUROC])
        assert result.error is None  # ended TERMINATED: not an error, so never retried
    for result in by_lr[0.001]:
        assert [r[keys.EPOCH] for r in _rows(result)] == [1, 2, 3]
    assert outcome.summary.count("nonfinite") == len(by_lr[1.0])
    assert outcome.summary.winner.config["train.learning_rate"] == 0.001
    ray_best = outcome.results.get_best_result(keys.OBJECTIVE, "max", scope="all")
    assert ray_best.config["train.learning_rate"] == 0.001


class KillWorkerOnce(tune.Callback):
    """SIGKILLs a trial's worker process once Tune has registered the checkpoint of ``epoch``
    (the worker is then already training the next epoch)."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.killed_pid = epoch, None

    def on_trial_save(self, iteration, trials, trial, **info):
        result = trial.last_result
        if self.killed_pid is None and result.get(keys.EPOCH) == self.epoch:
            self.killed_pid = result["pid"]
            os.kill(result["pid"], signal.SIGKILL)


def test_a_trial_whose_worker_is_killed_resumes_from_its_last_checkpoint(local_ray, tmp_path):
    killer = KillWorkerOnce(epoch=2)
    outcome = launcher.search(_settings(tmp_path, "killed", num_samples=1, max_epochs=4,
                                        max_failures=2), callbacks=[killer])
    assert killer.killed_pid is not None
    (result,) = outcome.results
    assert result.error is None
    rows = _rows(result)
    assert [r[keys.EPOCH] for r in rows] == [1, 2, 3, 4]  # nothing lost, nothing redone
    assert [r["resumed_from_epoch"] for r in rows] == [0, 0, 2, 2]  # restarted at epoch 2's
    assert rows[2]["pid"] != killer.killed_pid  # a new worker process
    assert outcome.summary.winner is not None


def test_a_search_on_a_folder_set_of_many_sizes_stores_its_resize_with_the_model(local_ray,
                                                                                  tmp_path):
    from tests.support.folder_fixture import PATCH, write_folder_set
    from vae.data.resize import resize_image
    from vae.score.inputs import files_source
    from vae.score.run import score_source

    folder = write_folder_set(tmp_path / "fabric")
    outcome = launcher.search(_settings(tmp_path, "folder", data_root=str(folder.root),
                                        data_format="folder", image_size=PATCH, num_samples=1,
                                        max_epochs=1, train_patches=0))
    assert outcome.results.num_errors == 0
    assert outcome.prepared.splits.summary.resize == PATCH
    # One patch per image: no strip to reference, so the strip reference is not compared.
    assert outcome.summary.winner.best_metrics[keys.VAL_SCORERS_COMPARED] == len(SCORERS)
    checkpoint = outcome.summary.winner.checkpoint_path
    model = vae.load(checkpoint)
    assert model.config.model.input_resize == PATCH
    # A new image of yet another size is resized exactly as the trial's data was.
    image = folder.root / "test/good/001.png"
    report = score_source(model, files_source([image], channels=1), tmp_path / "scored")
    assert report.images == 1 and report.patches == 1
    item = next(files_source([image], channels=1).items)
    expected, _ = score_patches(model, resize_image(item.image, PATCH)[None], keep_maps=False)
    row = (tmp_path / "scored" / "scores.csv").read_text().splitlines()[1].split(",")
    assert float(row[4]) == pytest.approx(float(expected[0]), rel=1e-6)


def test_the_real_objective_ranks_by_held_out_real_defects_scored_as_sklearn_does(local_ray,
                                                                                  tmp_path):
    from sklearn.metrics import roc_auc_score

    outcome = launcher.search(_settings(tmp_path, "real", objective="real"))
    assert outcome.prepared.objective == "real" and outcome.results.num_errors == 0
    real_val = outcome.prepared.splits.real_val
    assert 0 < real_val.labels.sum() < len(real_val)
    best_real = max(r[keys.VAL_REAL_AUROC] for result in outcome.results for r in _rows(result))
    winner = outcome.summary.winner
    assert winner.best_objective == pytest.approx(best_real)  # ranked by real defects
    assert winner.best_metrics[keys.VAL_REAL_AUROC] == pytest.approx(best_real)
    checkpoint = Path(winner.checkpoint_path)
    scores = np.load(checkpoint / "real_val_scores.npy")
    assert roc_auc_score(real_val.labels, scores) == pytest.approx(best_real, abs=1e-12)
    rescored = _rescore(vae.load(checkpoint), real_val.images,
                        TrialData.from_splits(outcome.prepared.splits).real_layout)
    # The pulled model scores as reported (up to reassociation, above).
    np.testing.assert_allclose(rescored, scores, rtol=1e-5, atol=REASSOCIATION)
    assert outcome.summary.fidelity is not None and outcome.summary.fidelity.trials == 3
