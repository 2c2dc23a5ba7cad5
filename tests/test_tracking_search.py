"""A tiny real search (local Ray, the real launcher and trainable) tracked into a SQLite file:
run layout, statuses (an ASHA-stopped trial ends FINISHED, a NaN trial FAILED), artifacts, the champion,
``aitexvae pull`` and the pyfunc — checked against what Ray itself recorded."""

from __future__ import annotations

import json
import math
import os
import re
import urllib.parse
from pathlib import Path

import mlflow
import numpy as np
import pytest
import ray
from mlflow import MlflowClient

import vae
from search import launcher
from search.cli import main as aitexvae
from search.mlflow_callback import tracking_hooks
from search.settings import SearchSettings
from search.space import Choice
from search.space_file import load_space_file
from tests.support.checkpoints import outputs
from tests.support.mlflow_server import migrated_sqlite
from tracking import settings as names
from tracking.registry import global_tracking_uri
from vae import keys
from vae.config import VAEConfig
from vae.score import score_patches
from vae.score.reference import strip_scores

pytestmark = pytest.mark.slow

MAX_EPOCHS = 3
# lr 1.0 without clipping overflows in the first steps (the search tests measured it); the
# others train. Seed 1 draws it once in 7 trials. ASHA with reduction factor 100 has one rung
# (epoch 1) and stops every trial below the best seen there, so of 6 finite trials all but
# those that lead when they report are stopped (none stopped: p = 1/720 for exchangeable values).
SPACE = ("train.learning_rate: {choice: [1.0, 0.001, 0.003, 0.0003, 0.002, 0.0005]}\n"
         "train.grad_clip_norm: 0.0\nmodel.output_activation: none\nloss.mse_weight: 1.0\n"
         "model.latent_dim: {choice: [4, 8]}\n")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One search, shared by the tests of this module (each asserts a different property)."""
    tmp = tmp_path_factory.mktemp("tracked-search")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AITEXVAE_HOME", str(tmp / "home"))  # synthetic data generated here
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        uri = migrated_sqlite(tmp / "mlflow.db", tmp_path_factory.getbasetemp())
        (tmp / "space.yaml").write_text(SPACE)
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
        try:
            settings = SearchSettings(
                name="tracked", image_size=32, num_samples=7, max_epochs=MAX_EPOCHS,
                train_patches=128, scheduler="asha", grace_period=1, reduction_factor=100.0,
                max_concurrent_trials=2, seed=1, space_file=str(tmp / "space.yaml"),
                storage_path=str(tmp / "ray_results"), tracking_uri=uri, verbose=0)
            prepared = launcher.prepare(settings)
            callbacks, on_end = tracking_hooks(prepared)
            ending = {}
            outcome = launcher.run(prepared, callbacks=callbacks,
                                   on_search_end=lambda o: ending.update(lines=on_end(o)))
        finally:
            ray.shutdown()
        yield {"outcome": outcome, "callback": callbacks[0], "uri": uri, "lines": ending["lines"],
               "tmp": tmp}


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _children(tracked) -> dict:
    client = _client(tracked["uri"])
    parent = tracked["callback"].outcome.parent_run_id
    runs = client.search_runs([client.get_run(parent).info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    return {run.data.tags[names.TAG_TRIAL_ID]: run for run in runs}


def _ray_rows(result) -> list[dict]:
    return result.metrics_dataframe.to_dict("records")


def test_one_parent_one_child_per_trial_with_params_and_one_value_per_epoch(tracked):
    client = _client(tracked["uri"])
    results = list(tracked["outcome"].results)
    parent = client.get_run(tracked["callback"].outcome.parent_run_id)
    assert len(client.search_runs([parent.info.experiment_id])) == 1 + len(results)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["scheduler"] == "asha" and parent.data.params["num_samples"] == "7"
    assert "None" not in parent.data.params.values()
    assert parent.data.params["objective"] == tracked["outcome"].prepared.objective
    assert parent.data.tags[names.TAG_SEARCH_SPACE].endswith("space.yaml")
    assert parent.data.tags[names.TAG_DATASET]
    assert parent.data.tags[names.TAG_RAY_ADDRESS]
    # The resolved space (file + built-in defaults) as a --space file that reads back the same
    local = client.download_artifacts(parent.info.run_id, names.SPACE_ARTIFACT,
                                      str(tracked["tmp"] / "downloaded"))
    used, back = tracked["outcome"].prepared.space, load_space_file(local)
    assert dict(back.params) == dict(used.params) and back.loss_mixes == used.loss_mixes == ()
    assert back.params["model.latent_dim"] == Choice((4, 8))  # from the file
    assert back.params["model.covariance"] == Choice(("diagonal", "full", "lowrank"))  # built in
    splits = tracked["outcome"].prepared.splits
    for run in [parent, *_children(tracked).values()]:  # the data as MLflow's dataset input
        (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
        assert dataset.name == "synthetic" and dataset.source.startswith("embedded synthetic")
        assert dataset.digest == parent.data.tags[names.TAG_DATASET][:36]
        profile = json.loads(dataset.profile)
        assert profile["patches"] == splits.summary.patches
        assert profile["splits"]["train"]["patches"] == len(splits.train)
    experiment = client.get_experiment(parent.info.experiment_id)  # kind, for UIs that read it
    assert experiment.tags[names.TAG_EXPERIMENT_KIND] == "custom_model_development"
    children = _children(tracked)
    assert set(children) == {r.metrics["trial_id"] for r in results}
    for result in results:
        run = children[result.metrics["trial_id"]]
        # every key of the resolved config, with the values Ray gave this trial
        assert set(run.data.params) == {k.replace(".", "/") for k in VAEConfig.valid_keys()}
        for key, value in result.config.items():
            assert run.data.params[key.replace(".", "/")] == str(value)
        rows = _ray_rows(result)
        history = client.get_metric_history(run.info.run_id, keys.VAL_AUROC)
        assert [m.step for m in history] == [int(r[keys.EPOCH]) for r in rows]
        for metric, row in zip(history, rows, strict=True):
            assert metric.value == pytest.approx(row[keys.VAL_AUROC], nan_ok=True)
        for key in (keys.TRAIN_LOSS, keys.VAL_MSE, keys.TRAIN_IMAGES_PER_S,
                    keys.SYSTEM_CPU_CORES, keys.SYSTEM_CPU_PERCENT, keys.SYSTEM_MEMORY_PEAK_MB):
            if not row.get("nonfinite"):
                assert len(client.get_metric_history(run.info.run_id, key)) == len(rows)
        if not row.get("nonfinite"):  # what the trial's process used, as it reported it
            logged = run.data.metrics
            assert 0 < logged[keys.SYSTEM_CPU_CORES] <= os.cpu_count()
            assert logged[keys.SYSTEM_CPU_PERCENT] == pytest.approx(
                100 * logged[keys.SYSTEM_CPU_CORES] / 1)  # one CPU granted per trial here
            assert logged[keys.SYSTEM_MEMORY_PEAK_MB] > 100  # torch alone is more
            assert keys.SYSTEM_GPU_PERCENT not in logged  # no GPU, no GPU figures


def test_statuses_finished_also_when_stopped_by_asha_and_failed_for_nan(tracked):
    children = _children(tracked)
    kinds = set()
    for result in tracked["outcome"].results:
        run = children[result.metrics["trial_id"]]
        rows = _ray_rows(result)
        reason = run.data.tags.get(names.TAG_STOP_REASON, "")
        if any(r.get("nonfinite") for r in rows):
            kinds.add("nan")
            assert run.info.status == "FAILED" and reason.startswith("non-finite"), reason
        elif len(rows) < MAX_EPOCHS:
            kinds.add("asha")
            assert run.info.status == "FINISHED"
            assert reason == (f"stopped early by the scheduler after epoch {len(rows)} of "
                              f"{MAX_EPOCHS}") == run.data.tags[names.TAG_OUTCOME]
        else:
            kinds.add("finished")
            assert run.info.status == "FINISHED" and not reason
            assert run.data.tags[names.TAG_OUTCOME] == f"completed all {MAX_EPOCHS} epochs"
    assert kinds == {"nan", "asha", "finished"}, "the seeded search should produce all three"


def test_probe_picture_and_best_checkpoint_on_every_trial_with_a_finite_auroc(tracked):
    client = _client(tracked["uri"])
    children = _children(tracked)
    for result in tracked["outcome"].results:
        run_id = children[result.metrics["trial_id"]].info.run_id
        finite = [r for r in _ray_rows(result) if math.isfinite(r[keys.OBJECTIVE])]
        best = sorted(a.path for a in client.list_artifacts(run_id, "checkpoints/best"))
        probe = [a.path for a in client.list_artifacts(run_id, "probe")]
        if finite:
            assert best == ["checkpoints/best/calibration.json", "checkpoints/best/config.json",
                            "checkpoints/best/model.safetensors"]
            assert probe == ["probe/probe.png"]
            top = max(finite, key=lambda r: r[keys.OBJECTIVE])
            tags = children[result.metrics["trial_id"]].data.tags
            assert int(tags[names.TAG_BEST_EPOCH]) == int(top[keys.EPOCH])
        else:  # the NaN trial reported once, without a checkpoint
            assert best == [] and probe == []


def test_champion_is_the_winner_and_pull_rebuilds_its_checkpoint(tracked, tmp_path):
    outcome, uri = tracked["outcome"], tracked["uri"]
    winner = outcome.summary.winner
    client = _client(uri)
    version = client.get_model_version_by_alias("aitex-vae", "champion")
    assert version.run_id == _children(tracked)[winner.trial_id].info.run_id
    assert tracked["callback"].outcome.champion_trial_id == winner.trial_id
    assert f"val/objective = {winner.best_objective:.4f}" in version.description
    # The logged model, the run and the version link to each other (the UI says "Registered")
    assert version.source.startswith("models:/m-")
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert logged.source_run_id == version.run_id
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [
        {"name": "aitex-vae", "version": version.version}]
    # The logged model's page: the champion's description, and its best-epoch metrics on the
    # data set the runs name as their input ("Datasets used").
    assert logged.tags[names.TAG_NOTE] == version.description
    (dataset,) = [d.dataset for d in client.get_run(version.run_id).inputs.dataset_inputs]
    on_model = {m.key: m for m in logged.metrics}
    assert on_model[keys.VAL_OBJECTIVE].value == pytest.approx(winner.best_objective)
    assert keys.TRAIN_LOSS in on_model and keys.VAL_MSE in on_model
    assert all(key.startswith(("train/", "val/")) for key in on_model)  # no system/, no best/
    assert {(m.step, m.dataset_name, m.dataset_digest) for m in on_model.values()} == {
        (winner.best_epoch, dataset.name, dataset.digest)}
    parent = client.get_run(tracked["callback"].outcome.parent_run_id)  # descriptions in the UI
    note = parent.data.tags[names.TAG_NOTE]
    assert f"Champion: trial `{winner.trial_id}`" in note and "models:/aitex-vae/" in note
    for trial_id, run in _children(tracked).items():
        assert run.data.tags[names.TAG_NOTE].startswith(f"Trial `{trial_id}`: "
                                                       f"{run.info.status}, ")
    out = tmp_path / "pulled"
    assert aitexvae(["pull", "--tracking-uri", uri, "--out", str(out)]) == 0
    val = outcome.prepared.splits.val.images
    trial_model = vae.load(winner.checkpoint_path)
    np.testing.assert_array_equal(outputs(vae.load(out), val), outputs(trial_model, val))
    assert (out / "calibration.json").is_file()
    with global_tracking_uri(uri):
        pyfunc = mlflow.pyfunc.load_model("models:/aitex-vae@champion")
    reference = trial_model.config.score.reference  # the scorer the champion's trial chose
    if reference == "none":
        expected, _ = score_patches(trial_model, val, keep_maps=False)
    else:  # one pyfunc call is one strip
        expected = strip_scores(trial_model, val, reference=reference)[0]
    np.testing.assert_allclose(pyfunc.predict(val), expected, rtol=1e-6, atol=1e-6)


def test_next_steps_name_the_ui_and_the_pull_commands(tracked):
    text = "\n".join(tracked["lines"])
    db = Path(tracked["uri"].removeprefix("sqlite:///"))
    assert f"mlflow ui --backend-store-uri sqlite:///{db}" in text
    # The page it names lists this search's trials best first: its filter and sort, applied to
    # the store, give the search's ranking.
    (address,) = re.findall(r"then open (http://127\.0\.0\.1:5000/\S+)", text)
    fragment = urllib.parse.urlsplit(address).fragment
    path, query = fragment.split("?")
    client, parent = _client(tracked["uri"]), tracked["callback"].outcome.parent_run_id
    assert path == f"/experiments/{client.get_run(parent).info.experiment_id}/runs"
    query = dict(urllib.parse.parse_qsl(query))
    assert query["orderByKey"] == "metrics.`best/val_objective`" and query["orderByAsc"] == "false"
    assert query["workflowType"] == "machine_learning"  # not MLflow 3.17's default GenAI view
    runs = client.search_runs([client.get_run(parent).info.experiment_id], query["searchFilter"],
                              order_by=[f"{query['orderByKey']} DESC"])
    ranked = [t.trial_id for t in tracked["outcome"].summary.trials if t.ranked]
    listed = [r.data.tags[names.TAG_TRIAL_ID] for r in runs]
    assert listed[:len(ranked)] == ranked and sorted(listed) == sorted(_children(tracked))
    assert f"aitexvae pull --model-uri models:/aitex-vae@champion --tracking-uri sqlite:///{db}" \
        in text
    assert (db.parent / "mlartifacts").is_dir() and os.listdir(db.parent / "mlartifacts")


def test_the_parent_records_the_objective_and_the_proxy_fidelity(tracked):
    outcome = tracked["outcome"]
    fidelity = outcome.summary.fidelity
    assert outcome.prepared.objective != "synthetic"  # the synthetic set has labelled defects
    assert fidelity is not None
    parent = _client(tracked["uri"]).get_run(tracked["callback"].outcome.parent_run_id)
    assert parent.data.tags["aitexvae.objective"] == outcome.prepared.objective
    assert parent.data.tags["aitexvae.fidelity"] == fidelity.describe(outcome.prepared.objective)
    assert parent.data.metrics["fidelity/trials"] == fidelity.trials
    if math.isfinite(fidelity.spearman):
        assert parent.data.metrics["fidelity/spearman"] == pytest.approx(fidelity.spearman)
    for child in _children(tracked).values():  # every child carries both figures per epoch
        if keys.TRAIN_LOSS not in child.data.metrics:  # the trial that overflowed at once
            continue
        assert {keys.VAL_OBJECTIVE, keys.VAL_AUROC, keys.VAL_REAL_AUROC} <= set(child.data.metrics)


def test_sorting_children_by_their_best_objective_metric_gives_the_searchs_ranking(tracked):
    client = _client(tracked["uri"])
    parent_id = tracked["callback"].outcome.parent_run_id
    parent = client.get_run(parent_id)
    key = names.best_metric(keys.OBJECTIVE)
    assert key == "best/val_objective"
    ranked = [t for t in tracked["outcome"].summary.trials if t.ranked]
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                              order_by=[f"metrics.`{key}` DESC"])
    by_metric = [r.data.tags[names.TAG_TRIAL_ID] for r in runs if key in r.data.metrics]
    assert by_metric[:len(ranked)] == [t.trial_id for t in ranked]
    for trial in ranked:
        run = next(r for r in runs if r.data.tags[names.TAG_TRIAL_ID] == trial.trial_id)
        assert run.data.metrics[key] == pytest.approx(trial.best_objective)
    assert parent.data.metrics[key] == pytest.approx(ranked[0].best_objective)  # the champion


def test_the_summary_plot_takes_its_log_axes_from_the_space(tracked):
    # learning_rate is a choice in this space (no log axis), kl_weight stays the built-in
    # log-uniform one, whatever values the trials happened to draw.
    assert tracked["callback"].tracker.log_scale_keys == frozenset({"loss/kl_weight"})
