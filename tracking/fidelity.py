"""Proxy fidelity on the parent run: ``fidelity/spearman`` and ``fidelity/trials`` metrics and an
``aitexvae.fidelity`` tag holding the plain-words verdict (with its warning when low). The
numbers come from ``search.fidelity``; this module only records them.
"""

from __future__ import annotations

import math
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

METRIC_SPEARMAN, METRIC_TRIALS = "fidelity/spearman", "fidelity/trials"
TAG_FIDELITY, TAG_OBJECTIVE = "aitexvae.fidelity", "aitexvae.objective"


def log_fidelity(tracking_uri: str, run_id: str, spearman: float, trials: int, objective: str,
                 verdict: str) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(METRIC_TRIALS, float(trials), now, 0)]
    if math.isfinite(spearman):
        metrics.append(Metric(METRIC_SPEARMAN, float(spearman), now, 0))
    MlflowClient(tracking_uri).log_batch(run_id, metrics=metrics, tags=[
        RunTag(TAG_FIDELITY, verdict), RunTag(TAG_OBJECTIVE, objective)])
