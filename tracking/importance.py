"""Hyperparameter importances on the parent run: ``summary/importances.json``, a bar chart
``summary/importances.png`` and one ``importance/<key>`` metric per parameter (sortable in the
runs table). The numbers come from ``search.importance``; this module only records them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric

from tracking.artifacts import no_progress_bars
from tracking.settings import SUMMARY_PATH

IMPORTANCES_JSON, IMPORTANCES_PNG = "importances.json", "importances.png"
METRIC_PREFIX = "importance/"


def plot_importances(importances: Mapping[str, float], n_trials: int, path: Path) -> Path:
    """A horizontal bar chart, most important on top."""
    names = list(importances)[::-1]
    figure = Figure(figsize=(7.0, 0.45 * len(names) + 1.4), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(names, [importances[n] for n in names], color="#3b75af")
    for y, name in enumerate(names):
        axes.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize=9)
    axes.set_xlim(0, max(1.0, max(importances.values()) * 1.15))
    axes.set_xlabel("relative importance for the objective (fANOVA main effects, sum 1)")
    axes.set_title(f"Which knobs mattered ({n_trials} ranked trials)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path)
    return path


def log_importances(tracking_uri: str, run_id: str, importances: Mapping[str, float],
                    n_trials: int) -> None:
    """Record importances on ``run_id`` (the parent). Nothing is logged for an empty mapping."""
    if not importances:
        return
    client = MlflowClient(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="aitexvae-importances-") as folder:
        folder_path = Path(folder)
        (folder_path / IMPORTANCES_JSON).write_text(json.dumps(
            {"evaluator": "fanova", "ranked_trials": n_trials, "importances": dict(importances)},
            indent=2) + "\n")
        plot_importances(importances, n_trials, folder_path / IMPORTANCES_PNG)
        with no_progress_bars():
            client.log_artifacts(run_id, folder, SUMMARY_PATH)
    client.log_batch(run_id, metrics=[Metric(f"{METRIC_PREFIX}{key}", float(value), 0, 0)
                                      for key, value in importances.items()])
