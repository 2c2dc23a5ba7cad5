"""Register a search's champion: a pyfunc model version under an alias (not a deprecated stage).

The model is logged into the winning trial's own run, with MLflow's "models from code"
(``tracking/pyfunc_model.py`` as a file path: no ``python_model.pkl``), the ``vae`` package as
code, and the trial's best checkpoint (safetensors + config JSON + calibration) as its only
artifact. Its signature says what the pyfunc takes and gives: uint8 patches ``(N, C, P, P)``
(any one image size when the model resizes its input) in, float32 scores ``(N,)`` out, and an
input example (a normal and a defective validation patch) shows it. MLflow's model logging
resolves the experiment from the active run and the store from the global tracking URI, so
both are set for the duration of the call and put back;
the registry calls go through an explicit client (no global registry URI is left behind).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_TRACKING_URI
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

import vae
from tracking.artifacts import no_progress_bars, refuse_pickles
from tracking.settings import WEIGHTS_ARTIFACT
from vae.config import VAEConfig
from vae.io import load_config

logger = logging.getLogger(__name__)

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
VAE_PACKAGE = Path(vae.__file__).resolve().parent
MODEL_NAME_IN_RUN = "model"
# What `vae` imports at scoring time; pinned to this environment's versions for reproducibility.
REQUIREMENTS = ("torch", "numpy", "safetensors", "scikit-learn", "pillow", "mlflow")


@dataclass(frozen=True)
class RegisteredChampion:
    name: str
    version: str
    alias: str
    run_id: str
    model_id: str | None

    @property
    def alias_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def pip_requirements() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:  # a local build tag (+cpu, +cu124) is not on PyPI: keep the public version
            pins.append(f"{name}=={metadata.version(name).split('+', 1)[0]}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


@contextlib.contextmanager
def global_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """Several MLflow 3 paths read the global URI whatever client or argument they are given
    (model logging, resolving ``models:/`` sources and aliases); set it, then put back exactly
    what was there: a URI set in code, one from $MLFLOW_TRACKING_URI, or none at all."""
    was_set, previous = mlflow.is_tracking_uri_set(), mlflow.get_tracking_uri()
    environment = os.environ.get(MLFLOW_TRACKING_URI.name)
    mlflow.set_tracking_uri(tracking_uri)  # (this also exports $MLFLOW_TRACKING_URI)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous if was_set else None)
        if environment is None:
            os.environ.pop(MLFLOW_TRACKING_URI.name, None)
        else:
            os.environ[MLFLOW_TRACKING_URI.name] = environment


def model_signature(config: VAEConfig) -> ModelSignature:
    """uint8 images in, one float32 score per image out; ``decisions`` adds accept/reject.

    MLflow enforces the input schema on ``predict`` and parses served JSON by its dtype, so a
    caller learns the contract from the model itself: the channels and patch side of the
    model's training data (any height and width when the model resizes its input, as
    ``model.input_resize`` does). The output schema describes the plain scores; with
    ``decisions`` the pyfunc returns a dict instead (MLflow does not enforce outputs).
    """
    model = config.model
    side = -1 if model.input_resize else model.image_size
    # Unnamed: a named tensor would make MLflow hand predict a {name: array} dict.
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, model.in_channels, side, side))])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1,))])
    return ModelSignature(inputs, outputs,
                          params=ParamSchema([ParamSpec("decisions", "boolean", False)]))


def log_pyfunc(client: MlflowClient, tracking_uri: str, run_id: str, weights_dir: Path,
               input_example: np.ndarray | None = None):
    """Log the pyfunc into ``run_id`` (its status and end time are kept); returns ModelInfo.

    ``input_example``: a few uint8 patches ``(K, C, P, P)`` the model takes, or None.
    """
    refuse_pickles(weights_dir)
    signature = model_signature(load_config(weights_dir))
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="aitexvae-champion-") as scratch:
        # MLflow names the artifact folder after the source folder: make it `weights`.
        weights = Path(scratch) / WEIGHTS_ARTIFACT
        shutil.copytree(weights_dir, weights)
        info = _log_model(run_id, tracking_uri, weights, signature, input_example)
    if run.info.status != "RUNNING":  # reopening the run to log into it must not change history
        client.set_terminated(run_id, status=run.info.status, end_time=run.info.end_time)
    return info


def _log_model(run_id: str, tracking_uri: str, weights: Path, signature: ModelSignature,
               input_example: np.ndarray | None):
    # No system-metrics monitor on the reopened run: its host-wide readings of this driver
    # would land in the trial's own system/ series.
    with global_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id,
                                                             log_system_metrics=False), \
            no_progress_bars(), warnings.catch_warnings():
        # Deliberate choices, not problems: the signature, not type hints, is the contract,
        # and a tracker without probe patches has no example to give.
        hushed = r".*type hint.*" if input_example is not None else r".*(type hint|input example).*"
        warnings.filterwarnings("ignore", message=hushed, category=UserWarning)
        return Model.log(None, mlflow.pyfunc, name=MODEL_NAME_IN_RUN, python_model=str(PYFUNC_CODE),
                         artifacts={WEIGHTS_ARTIFACT: str(weights)},
                         code_paths=[str(VAE_PACKAGE)], pip_requirements=pip_requirements(),
                         signature=signature, input_example=input_example)


def _link_version(client: MlflowClient, model_id: str, name: str, version: int | str) -> None:
    """What ``mlflow.register_model`` adds to ``create_model_version``: the logged model's
    ``mlflow.modelVersions`` tag, from which the UI's logged-model page shows "Registered" and
    links the version (without it, the page offers a "Register model" button)."""
    logged = client.get_logged_model(model_id)
    versions = json.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    versions.append({"name": name, "version": version})  # as mlflow.register_model writes it
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(versions)})


def register_champion(client: MlflowClient, tracking_uri: str, run_id: str, weights_dir: Path,
                      name: str, alias: str, description: str,
                      tags: dict[str, str] | None = None,
                      input_example: np.ndarray | None = None) -> RegisteredChampion:
    """Log the pyfunc, add it as a new version of ``name``, point ``alias`` at it."""
    info = log_pyfunc(client, tracking_uri, run_id, weights_dir, input_example)
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(
            name, description="AitexVAE fabric-defect detectors found by aitexvae searches; "
                              "the alias marks the current champion.")
    # The SQL registry resolves a models:/m-… source through the *global* tracking URI.
    with global_tracking_uri(tracking_uri):
        version = client.create_model_version(name, source=info.model_uri, run_id=run_id,
                                              tags=tags, description=description,
                                              await_creation_for=60, model_id=info.model_id)
    _link_version(client, info.model_id, name, version.version)
    client.set_registered_model_alias(name, alias, version.version)
    logger.info("MLflow: registered %s version %s as @%s (run %s)", name, version.version, alias,
                run_id)
    return RegisteredChampion(name=name, version=str(version.version), alias=alias,
                              run_id=run_id, model_id=info.model_id)
