"""``pull``: download a registered model (or any run's checkpoint) into a folder ``vae.load`` reads.

Accepts ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/m-<id>`` and
``runs:/RUN_ID/PATH`` (e.g. ``runs:/…/checkpoints/best``). Everything downloaded is checked
for pickle payloads before anything is copied; the output folder holds only
``model.safetensors``, ``config.json`` and ``calibration.json``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tracking.artifacts import MODEL_FILES, no_progress_bars, refuse_pickles
from tracking.settings import (
    DEFAULT_MODEL_URI,
    DEFAULT_TRACKING_URI,
    WEIGHTS_ARTIFACT,
    absolute_uri,
)
from vae.io import CONFIG_FILE, WEIGHTS_FILE
from vae.score import CALIBRATION_FILE

logger = logging.getLogger(__name__)

URI_SCHEMES = ("models:/", "runs:/")


@dataclass(frozen=True)
class PulledModel:
    path: Path
    model_uri: str
    calibrated: bool  # calibration.json came with it


def _model_folder(root: Path) -> Path:
    """Where the weights are in a download: an MLflow model's artifact, or a plain checkpoint."""
    preferred = root / "artifacts" / WEIGHTS_ARTIFACT
    if (preferred / WEIGHTS_FILE).is_file():
        return preferred
    candidates = sorted({path.parent for path in root.rglob(WEIGHTS_FILE)
                         if (path.parent / CONFIG_FILE).is_file()})
    if len(candidates) != 1:
        found = [str(c.relative_to(root)) for c in candidates]
        raise FileNotFoundError(f"expected one folder with {WEIGHTS_FILE} + {CONFIG_FILE} in the "
                                f"download, found {len(candidates)}: {found}")
    return candidates[0]


def pull(model_uri: str = DEFAULT_MODEL_URI, out_dir: str | Path = "aitex-vae",
         tracking_uri: str | None = None, verify: bool = True) -> PulledModel:
    """Download ``model_uri`` into ``out_dir`` so that ``vae.load(out_dir)`` rebuilds it."""
    if not isinstance(model_uri, str) or not model_uri.startswith(URI_SCHEMES):
        raise ValueError(f"model URI {model_uri!r} is not supported; use one of "
                         "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH")
    import mlflow
    from mlflow.exceptions import MlflowException

    from tracking.preflight import TrackingUnavailableError, check_tracking_uri, sqlite_path
    from tracking.registry import global_tracking_uri

    uri = absolute_uri(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                       or DEFAULT_TRACKING_URI)
    if uri.startswith("sqlite:///") and not sqlite_path(uri).is_file():
        raise TrackingUnavailableError(f"no MLflow database at {sqlite_path(uri)} (tracking URI "
                                       f"{uri!r}); pass the --tracking-uri the search used")
    check_tracking_uri(uri)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="aitexvae-pull-") as scratch:
        try:  # models:/ aliases resolve through the global registry URI, not the arguments
            with global_tracking_uri(uri), no_progress_bars():
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=model_uri, dst_path=scratch, tracking_uri=uri, registry_uri=uri)
        except MlflowException as error:
            raise ValueError(f"cannot download {model_uri!r} from {uri}: {error.message}") from None
        root = Path(local)
        refuse_pickles(root)  # before anything reaches out_dir
        folder = _model_folder(root)
        out.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            target = out / name
            if (folder / name).is_file():
                shutil.copy2(folder / name, target)
            elif target.exists():  # a stale calibration from an earlier pull would mislead
                target.unlink()
    calibrated = (out / CALIBRATION_FILE).is_file()
    if not calibrated:
        logger.warning("%s has no %s: scores come without accept/reject decisions", model_uri,
                       CALIBRATION_FILE)
    if verify:
        import vae

        vae.load(out)  # fails here, not in the user's code, if the folder cannot rebuild
    logger.info("pulled %s from %s into %s", model_uri, uri, out)
    return PulledModel(path=out, model_uri=model_uri, calibrated=calibrated)


def cache_dir(model_uri: str, tracking_uri: str | None) -> Path:
    """A per-(store, URI) folder under ``$AITEXVAE_HOME/models`` (``vae.data.aitexvae_home``,
    the one owner of where aitexvae keeps files; default ``~/.cache/aitexvae``)."""
    from vae.data import aitexvae_home

    key = hashlib.sha256(f"{tracking_uri or ''}\n{model_uri}".encode()).hexdigest()[:16]
    return aitexvae_home() / "models" / key


def resolve_model_dir(model_ref: str, tracking_uri: str | None = None) -> Path:
    """A local model folder for ``model_ref``: the folder itself, or a fresh pull of a URI.

    A URI is pulled again on every call (an alias such as ``@champion`` moves between
    searches); the folder is checked for pickle payloads either way.
    """
    if model_ref.startswith(URI_SCHEMES):
        return pull(model_ref, cache_dir(model_ref, tracking_uri), tracking_uri).path
    folder = Path(model_ref)
    if not folder.is_dir():
        raise FileNotFoundError(f"model {model_ref!r} is neither a folder nor a model URI "
                                "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH)")
    refuse_pickles(folder)
    return folder


def load_model(model_ref: str, tracking_uri: str | None = None):
    """``vae.load`` of a local folder or of a pulled ``models:/`` / ``runs:/`` URI.

    The folder's ``calibration.json`` (when there is one) is attached as ``model.calibration``,
    which ``aitexvae score`` uses for its accept/reject decisions.
    """
    import vae
    from vae.score import Calibration

    folder = resolve_model_dir(model_ref, tracking_uri)
    model = vae.load(folder)
    if (folder / CALIBRATION_FILE).is_file():
        model.calibration = Calibration.from_json(folder / CALIBRATION_FILE)
    return model
