"""The tracker's parts on their own: probe choice and picture, params/metrics flattening,
checkpoint staging and calibration, champion eligibility, the writer, summary, settings."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.checkpoints import make_model, tiny_config, validation_set, write_checkpoint
from tracking.artifacts import stage_checkpoint
from tracking.finish import eligible
from tracking.params import flatten_params, metrics_from_result
from tracking.probe import ACCEPT, REJECT, WRONG, captions, choose_probe, probe_rows, render_probe
from tracking.settings import TrackingSettings, next_steps, run_page, trials_page
from tracking.summary import KINDS, plot_summary, searched_keys, summary_figure, write_table
from tracking.writer import Writer
from vae.score import Calibration, anomaly_maps, patch_scores, score_patches


def test_probe_set_is_balanced_fixed_by_seed_and_changes_with_it():
    images, labels = validation_set(normal=10, defect=10)
    first = choose_probe(images, labels, per_class=4, seed=5)
    again = choose_probe(images, labels, per_class=4, seed=5)
    other = choose_probe(images, labels, per_class=4, seed=6)
    assert list(first.labels) == [0] * 4 + [1] * 4
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.images, images[first.indices])
    assert list(first.indices) != list(other.indices)
    with pytest.raises(ValueError, match="uint8"):
        choose_probe(images.astype(np.float32), labels)


def test_probe_rows_use_the_projects_anomaly_maps_and_the_picture_has_one_tile_each():
    images, labels = validation_set(normal=3, defect=3)
    probe = choose_probe(images, labels, per_class=2)
    model = make_model(tiny_config(), seed=1)
    rows = probe_rows(model, probe)
    np.testing.assert_array_equal(rows["residual"], anomaly_maps(model, probe.images))
    assert rows["input"].shape == rows["reconstruction"].shape == (4, 1, 32, 32)
    assert rows["spectrum gap"].shape == (4, 32, 32) and (rows["spectrum gap"] >= 0).all()
    picture = render_probe(model, probe, title="t")
    # 32 px patches enlarged to 160 px tiles (+4 px gaps), a label column and colour bars
    assert isinstance(picture, Image.Image) and picture.size == (150 + 4 * 164 + 70,
                                                                 26 + 64 + 4 * 164)
    # The captions' scores are the ones `aitexvae score` computes for these patches.
    np.testing.assert_allclose(patch_scores(rows["residual"], model.config.score),
                               score_patches(model, probe.images, keep_maps=False)[0],
                               rtol=1e-6)


def _probe_calibration(threshold: float) -> Calibration:
    return Calibration(n=10, mean=0.0, std=1.0, quantile=0.99, threshold=threshold)


def test_probe_captions_give_each_score_and_its_decision_against_the_threshold():
    scores, labels = np.array([0.1, 0.5, 0.2, 0.9]), np.array([0, 0, 1, 1])
    decided = captions(scores, labels, _probe_calibration(0.3))
    assert [(score, decision) for score, decision, _ in decided] == [
        ("score 0.1", "accept"), ("score 0.5", "reject (false alarm)"),
        ("score 0.2", "accept (missed)"), ("score 0.9", "reject")]
    assert decided[0][2] == ACCEPT and decided[3][2] == REJECT
    assert decided[1][2] == decided[2][2] == WRONG
    assert [d[1] for d in captions(scores, labels, None)] == ["no threshold"] * 4


def test_the_probe_picture_prints_decisions_in_their_colours():
    images, labels = validation_set(normal=3, defect=3)
    probe = choose_probe(images, labels, per_class=2)
    model = make_model(tiny_config(), seed=1)
    scores, _ = score_patches(model, probe.images, keep_maps=False)

    def pixels_of(colour, calibration) -> int:
        picture = np.asarray(render_probe(model, probe, calibration=calibration))
        return int((picture == np.array(colour, np.uint8)).all(axis=-1).sum())

    everything_rejected = _probe_calibration(float(scores.min()) / 2)  # normals: false alarms
    assert pixels_of(WRONG, everything_rejected) > 0 and pixels_of(ACCEPT, everything_rejected) == 0
    nothing_rejected = _probe_calibration(float(scores.max()) * 2)  # defects: missed
    assert pixels_of(WRONG, nothing_rejected) > 0 and pixels_of(REJECT, nothing_rejected) == 0
    assert pixels_of(WRONG, None) == 0  # no threshold, no verdict


def test_the_probe_of_a_strip_reference_model_shows_the_trials_own_scores_or_none():
    images, labels = validation_set(normal=3, defect=3)
    probe = choose_probe(images, labels, per_class=2)
    model = make_model(tiny_config(**{"score.reference": "strip_peak"}), seed=1)
    calibration = _probe_calibration(0.5)

    def pixels_of(colour, scores) -> int:
        picture = np.asarray(render_probe(model, probe, calibration=calibration, scores=scores))
        return int((picture == np.array(colour, np.uint8)).all(axis=-1).sum())

    # The trial's own scores (its val_scores.npy at the probe's indices) are decided ...
    assert pixels_of(REJECT, np.array([0.1, 0.2, 0.8, 0.9])) > 0
    assert pixels_of(WRONG, np.array([0.9, 0.2, 0.1, 0.9])) > 0
    # ... and without them nothing is decided: a lone patch has no strip to be scored against.
    assert pixels_of(REJECT, None) == pixels_of(ACCEPT, None) == pixels_of(WRONG, None) == 0
    assert [c[0] for c in captions(np.full(2, np.nan), np.array([0, 1]), None)] == \
        ["no score"] * 2


def test_params_flatten_nested_and_dotted_configs_alike():
    nested = flatten_params({"model": {"latent_dim": 8}, "train": {"learning_rate": 0.001}})
    dotted = flatten_params({"model.latent_dim": 8, "train.learning_rate": 0.001})
    assert nested == dotted == {"model/latent_dim": "8", "train/learning_rate": "0.001"}


def test_metrics_keep_split_quantity_values_including_nan_and_drop_ray_bookkeeping():
    result = {"train/loss": 1.5, "val/auroc": np.float32(0.75), "val/kl": math.nan,
              "epoch": 3, "time_total_s": 9.0, "done": False, "nonfinite": 0,
              "config": {"model.latent_dim": 8}, "custom": {"nested": 2.0}, "flag/x": True}
    metrics = metrics_from_result(result)
    assert set(metrics) == {"train/loss", "val/auroc", "val/kl", "custom/nested"}
    assert metrics["val/auroc"] == pytest.approx(0.75) and math.isnan(metrics["val/kl"])


def test_staged_checkpoint_holds_weights_config_and_a_calibration_of_normal_scores(tmp_path):
    images, labels = validation_set()
    model = make_model(tiny_config(), seed=3)
    source = write_checkpoint(tmp_path / "ckpt", model, 1, {"val/auroc": 0.7}, images)
    staged = stage_checkpoint(source, tmp_path / "staged", labels, quantile=0.9)
    assert sorted(p.name for p in staged.iterdir()) == ["calibration.json", "config.json",
                                                        "model.safetensors"]
    scores, _ = score_patches(model, images, keep_maps=False)
    calibration = Calibration.from_json(staged / "calibration.json")
    assert calibration == Calibration.fit(scores[labels == 0], quantile=0.9)
    mismatched = stage_checkpoint(source, tmp_path / "other", labels[:-1])
    assert not (mismatched / "calibration.json").exists()  # never a guess
    with pytest.raises(FileNotFoundError, match="vae.save"):
        stage_checkpoint(tmp_path, tmp_path / "nothing")


@pytest.mark.parametrize("row,expected", [
    ({"best_objective": "0.8", "nonfinite": "", "status": "FINISHED"}, True),
    # never from a failed trial (issue 11 item 5), whatever its checkpoints look like
    ({"best_objective": "0.8", "nonfinite": "", "status": "FAILED"}, False),
    ({"best_objective": "0.9", "nonfinite": "val/auroc=nan at epoch 2", "status": "FAILED"},
     False),
    ({"best_objective": "", "nonfinite": "", "status": "KILLED"}, False),
    ({"best_objective": "nan", "nonfinite": "", "status": "FINISHED"}, False),
])
def test_champion_eligibility(row, expected):
    assert eligible(row) is expected


def test_writer_keeps_order_and_records_failures_without_raising():
    writer = Writer(asynchronous=True)
    seen, main = [], threading.get_ident()
    writer.submit("first", lambda: (time.sleep(0.05), seen.append(threading.get_ident())))
    writer.submit("boom", lambda: 1 / 0)
    writer.submit("third", lambda: seen.append("third"))
    writer.flush()
    assert seen[0] != main and seen[1] == "third"
    assert writer.failures == ["boom: ZeroDivisionError: division by zero"]
    writer.close()


def test_summary_table_is_best_first_and_the_plot_needs_a_searched_dimension(tmp_path):
    rows = [{"trial_id": "a", "best_objective": "0.6", "model/latent_dim": "8", "x/y": "1"},
            {"trial_id": "b", "best_objective": "", "model/latent_dim": "16", "x/y": "1"},
            {"trial_id": "c", "best_objective": "0.9", "model/latent_dim": "4", "x/y": "1"}]
    assert searched_keys(rows, ["model/latent_dim", "x/y"]) == ["model/latent_dim"]
    csv_path, html_path = write_table(rows, ["model/latent_dim", "x/y"], tmp_path)
    lines = csv_path.read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["c", "a", "b"]
    assert "<td class='id'>c</td>" in html_path.read_text()
    picture = plot_summary(rows, ["model/latent_dim"], "val/auroc", tmp_path / "s.png")
    assert Image.open(picture).size[0] > 100
    assert plot_summary(rows, [], "val/auroc", tmp_path / "none.png") is None


def test_the_trials_page_rounds_numbers_links_runs_and_shows_the_searched_params(tmp_path):
    rows = [{"trial_id": "a", "run_id": "0123456789abcdef", "best_objective": "0.954729046737",
             "best_epoch": "12", "model/dropout": "0.0319776330", "x/y": "1"},
            {"trial_id": "b", "run_id": "fedcba9876543210", "best_objective": "0.5",
             "best_epoch": "3", "model/dropout": "0.4", "x/y": "1",
             "stop_reason": "stopped early by the scheduler after epoch 3 of 12"}]
    base = "http://10.0.0.1:5000/#/experiments/3/runs/"
    csv_path, html_path = write_table(rows, ["model/dropout", "x/y"], tmp_path,
                                      run_link=lambda run_id: f"{base}{run_id}?view")
    page = html_path.read_text()
    assert "<td class='num'>0.9548</td>" not in page and "<td class='num'>0.9547</td>" in page
    assert "0.954729046737" not in page and "0.954729046737" in csv_path.read_text()  # CSV: all
    assert "<td class='num'>0.03198</td>" in page and "<td class='num'>12</td>" in page
    assert f"<a href='{base}0123456789abcdef?view' target='_blank'>0123456789ab</a>" in page
    assert "model/<wbr>dropout" in page and "x/<wbr>y" not in page  # one value: not searched
    assert "x/y" in csv_path.read_text().splitlines()[0]
    assert "<style>" in page and "class=long" in page  # the reason gets room to wrap
    _, plain = write_table(rows, ["model/dropout"], tmp_path / "file-store")
    assert "<a href" not in plain.read_text()  # a file store has no UI address to link
    _, single = write_table(rows[:1], ["model/dropout", "x/y"], tmp_path / "one-trial")
    assert "x/<wbr>y" in single.read_text()  # nothing varies in one trial: every param shown


def test_the_summary_plot_marks_the_champion_and_early_stops_with_log_axes_where_searched():
    rows = [{"trial_id": "a", "best_objective": "0.9", "status": "FINISHED", "stop_reason": "",
             "train/learning_rate": "0.002", "model/latent_dim": "16", "model/act": "tanh"},
            {"trial_id": "b", "best_objective": "0.7", "status": "FINISHED",
             "stop_reason": "stopped early by the scheduler after epoch 1 of 4",
             "train/learning_rate": "0.0002", "model/latent_dim": "8", "model/act": "relu"},
            {"trial_id": "c", "best_objective": "0.8", "status": "FINISHED", "stop_reason": "",
             "train/learning_rate": "0.001", "model/latent_dim": "32", "model/act": "none"}]
    keys = ["model/act", "model/latent_dim", "train/learning_rate"]
    figure = summary_figure(rows, keys, "val/objective", champion="a",
                             log_keys={"train/learning_rate"})
    assert len(figure.axes) == 3  # one panel per dimension, no empty one
    scales = {axes.get_xlabel(): axes.get_xscale() for axes in figure.axes}
    assert scales == {"model/act": "linear", "model/latent_dim": "linear",
                      "train/learning_rate": "log"}  # a decade only: log because searched so
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "champion (trial a)", "ran every epoch", "stopped early by the scheduler"]  # no "x"
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 10
    assert all(axes.xaxis.label.get_fontsize() >= 10 for axes in figure.axes)
    champion_marks = [c for axes in figure.axes for c in axes.collections
                      if c.get_sizes()[0] == KINDS["champion"][4]]
    assert len(champion_marks) == 3 and all(len(c.get_offsets()) == 1 for c in champion_marks)
    hollow = [c for c in figure.axes[0].collections if len(c.get_facecolors()) == 0
              or c.get_facecolors()[0][3] == 0]
    assert len(hollow) == 1 and len(hollow[0].get_offsets()) == 1  # trial b, stopped early
    rows[2].update(best_objective="", status="FAILED")
    rows[0].update(status="KILLED", stop_reason="the search was interrupted")  # not an early stop
    legend = summary_figure(rows, keys, "val/objective", None, None).legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "stopped early by the scheduler", "left unfinished (interrupted)",
        "failed or non-finite (no value: at the bottom)"]


def test_next_steps_and_settings_validation(tmp_path):
    text = next_steps(f"sqlite:///{tmp_path}/m.db", model_name="fabric", alias="best")
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/m.db" in text
    assert "aitexvae pull --model-uri models:/fabric@best" in text
    assert "aitexvae pull" not in next_steps("http://10.0.0.1:5000", registered=False)
    page = trials_page("7", "fabric-1", "val/objective", descending=False)
    assert page == ("#/experiments/7/runs?searchFilter=tags.%60aitexvae.search%60%20%3D%20"
                    "%27fabric-1%27%20and%20tags.%60aitexvae.role%60%20%3D%20%27trial%27"
                    "&orderByKey=metrics.%60best%2Fval_objective%60&orderByAsc=true"
                    "&workflowType=machine_learning")  # MLflow 3.17's classic view: runs, models
    assert run_page("7", "abc") == "#/experiments/7/runs/abc?workflowType=machine_learning"
    served = next_steps("http://10.0.0.1:5000/", page=page).splitlines()[1]
    assert served.startswith(f"  open http://10.0.0.1:5000/{page}   # ")
    assert TrackingSettings(tracking_uri="sqlite:///rel.db").resolved().tracking_uri \
        .startswith("sqlite:////")
    with pytest.raises(ValueError, match="probe_per_class"):
        TrackingSettings(probe_per_class=0)
    with pytest.raises(ValueError, match="calibration_quantile"):
        TrackingSettings(calibration_quantile=1.0)


def test_the_tune_callback_pickles_small_and_keeps_its_search_id(tmp_path):
    """Tune pickles callbacks into tuner.pkl: no client or thread inside, the probe only."""
    from ray import cloudpickle

    from search.mlflow_callback import MlflowTrackingCallback

    images, labels = validation_set(normal=40, defect=40)
    callback = MlflowTrackingCallback(TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/m.db"),
                                      "s", val_images=images, val_labels=labels)
    callback._tracker = object()  # stands for a live tracker: must not travel
    data = cloudpickle.dumps(callback)
    restored = cloudpickle.loads(data)
    assert restored.search_id == callback.search_id and restored._tracker is None
    assert restored.probe.images.shape == (8, 1, 32, 32)
    assert len(data) < 40_000  # 8 probe patches and 80 labels, not the validation images


def test_tracking_never_imports_ray():
    package = Path(__file__).resolve().parent.parent / "tracking"
    modules = ["tracking." + p.stem for p in package.glob("*.py")
               if p.stem not in ("__init__", "pyfunc_model")]
    code = (f"import sys; import {', '.join(modules)}; "
            "print('ray' in sys.modules, [m for m in sys.modules if m.startswith('ray.')][:3])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "False []"


def test_a_tracking_error_inside_a_tune_callback_never_reaches_tune(tmp_path):
    """Tune ends the whole search when a callback raises; a broken checkpoint must not."""
    from types import SimpleNamespace

    from ray import tune

    from search.mlflow_callback import MlflowTrackingCallback

    callback = MlflowTrackingCallback(TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/m.db"),
                                      "safe", asynchronous=False)
    callback.setup()
    trial = SimpleNamespace(trial_id="t1", config=tiny_config().flat())  # Tune's Trial, minimal
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"epoch": 1, "val/objective": 0.6, "val/auroc": 0.6})
    empty = tmp_path / "empty-checkpoint"
    empty.mkdir()
    callback.on_checkpoint(0, [], trial, tune.Checkpoint.from_directory(str(empty)))
    failures = callback.tracker.writer.failures
    assert failures == [f"upload best checkpoint of trial t1 (epoch 1): FileNotFoundError: "
                        f"checkpoint {empty} has no model.safetensors"]
    callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([SimpleNamespace(trial_id="t1", status="TERMINATED")])
    assert callback.outcome.champion is None and callback.outcome.trials == 1


@pytest.mark.parametrize("before", ["unset", "in code", "from the environment"])
def test_global_tracking_uri_puts_back_exactly_what_was_there(before, tmp_path, monkeypatch):
    import mlflow

    from tracking.registry import global_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri(None)
    theirs = f"sqlite:///{tmp_path / 'theirs.db'}"
    if before == "in code":
        mlflow.set_tracking_uri(theirs)
        monkeypatch.delenv("MLFLOW_TRACKING_URI")  # set in code only, not exported by them
    elif before == "from the environment":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", theirs)
    was_set, environment = mlflow.is_tracking_uri_set(), os.environ.get("MLFLOW_TRACKING_URI")
    ours = f"sqlite:///{tmp_path / 'ours.db'}"
    try:
        with global_tracking_uri(ours):
            assert mlflow.get_tracking_uri() == ours
        assert mlflow.is_tracking_uri_set() is was_set
        assert os.environ.get("MLFLOW_TRACKING_URI") == environment
        if was_set:
            assert mlflow.get_tracking_uri() == theirs
    finally:
        mlflow.set_tracking_uri(None)
