"""Importances on the parent run of a real SQLite store: the table, the chart and one sortable
metric per parameter."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from tracking.importance import IMPORTANCES_JSON, IMPORTANCES_PNG, METRIC_PREFIX, log_importances
from tracking.settings import SUMMARY_PATH


def test_importances_are_logged_on_the_parent_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("imp", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    importances = {"model.tile_size": 0.7, "train.learning_rate": 0.2, "loss.mix": 0.1}
    log_importances(uri, run_id, importances, n_trials=8)
    files = {a.path for a in client.list_artifacts(run_id, SUMMARY_PATH)}
    assert files == {f"{SUMMARY_PATH}/{IMPORTANCES_JSON}", f"{SUMMARY_PATH}/{IMPORTANCES_PNG}"}
    local = client.download_artifacts(run_id, f"{SUMMARY_PATH}/{IMPORTANCES_JSON}",
                                      str(tmp_path / "down"))
    document = json.loads(Path(local).read_text())
    assert document["importances"] == importances and document["ranked_trials"] == 8
    metrics = client.get_run(run_id).data.metrics
    assert {k: v for k, v in metrics.items() if k.startswith(METRIC_PREFIX)} == {
        f"{METRIC_PREFIX}{k}": v for k, v in importances.items()}
    png = Path(client.download_artifacts(run_id, f"{SUMMARY_PATH}/{IMPORTANCES_PNG}",
                                         str(tmp_path / "png"))).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_is_logged_without_importances(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("none", artifact_location=str(tmp_path / "a"))
    run_id = client.create_run(experiment).info.run_id
    log_importances(uri, run_id, {}, n_trials=2)
    assert client.list_artifacts(run_id) == [] and client.get_run(run_id).data.metrics == {}
