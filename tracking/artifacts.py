"""What a trial's best checkpoint becomes in MLflow, and the pickle check on everything we read.

A Tune checkpoint holds weights, config, optimizer state, ``state.json`` and the validation
scores. Only what a downstream user needs travels to MLflow: ``model.safetensors`` +
``config.json`` (``vae.save``'s output) and ``calibration.json`` (fitted on the normal
validation patches' scores of that very checkpoint), so the folder is directly loadable with
``vae.load`` and makes accept/reject decisions. Nothing here unpickles anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vae.checkpoint import SCORES_FILE
from vae.io import CONFIG_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE
from vae.score import CALIBRATION_FILE, Calibration

logger = logging.getLogger(__name__)

MODEL_FILES = (WEIGHTS_FILE, CONFIG_FILE, CALIBRATION_FILE)  # all a pulled model consists of
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
PICKLE_SUFFIXES_ALL = (*PICKLE_SUFFIXES, ".joblib", ".dill", ".cloudpickle", ".pck")


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """A model is a few small files: MLflow's per-file progress bars would only clutter stderr."""
    previous = os.environ.get(PROGRESS_BAR_VARIABLE)
    os.environ[PROGRESS_BAR_VARIABLE] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_BAR_VARIABLE, None)
        else:
            os.environ[PROGRESS_BAR_VARIABLE] = previous


class UnsafeArtifactError(ValueError):
    """A model folder holds a pickle payload; loading it could run arbitrary code."""


def _looks_pickled(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4)
    # Pickle protocol 2+ starts with PROTO (0x80) and the protocol number.
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head.startswith(b"PK\x03\x04") and zipfile.is_zipfile(path):  # torch.save's zip format
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(".pkl") for name in archive.namelist())
    return False


def find_pickles(folder: str | Path) -> list[Path]:
    """Every file under ``folder`` that is (or is named like) a pickle payload."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and (path.suffix.lower() in PICKLE_SUFFIXES_ALL or _looks_pickled(path)):
            found.append(path)
    return found


def refuse_pickles(folder: str | Path) -> None:
    """Raise ``UnsafeArtifactError`` naming the payloads if ``folder`` holds any pickle."""
    pickles = find_pickles(folder)
    if pickles:
        names = [str(p.relative_to(folder)) for p in pickles]
        raise UnsafeArtifactError(
            f"{folder} holds pickle payload(s) {names}; refusing to use it (unpickling can run "
            f"arbitrary code). A model folder holds only {list(MODEL_FILES)}")


def fit_calibration(checkpoint_dir: Path, validation_labels: np.ndarray | None,
                    quantile: float) -> Calibration | None:
    """Calibration from the checkpoint's validation scores on the normal patches, or None.

    ``val_scores.npy`` holds one score per validation patch in split order; the labels say
    which are normal. Missing or mismatched inputs give None (with a warning), never a guess.
    """
    scores_path = checkpoint_dir / SCORES_FILE
    if validation_labels is None or not scores_path.is_file():
        return None
    scores = np.load(scores_path, allow_pickle=False).reshape(-1)
    labels = np.asarray(validation_labels).reshape(-1)
    if scores.shape != labels.shape:
        logger.warning("%s has %d scores but the validation split has %d patches; no "
                       "calibration for this checkpoint", scores_path, scores.size, labels.size)
        return None
    normal = scores[labels == 0]
    if normal.size == 0 or not np.isfinite(normal).all():
        logger.warning("no finite normal validation scores in %s; no calibration", scores_path)
        return None
    return Calibration.fit(normal, quantile=quantile)


def stage_checkpoint(checkpoint_dir: str | Path, destination: Path,
                     validation_labels: np.ndarray | None = None, quantile: float = 0.99
                     ) -> Path:
    """Copy the weights + config (and write ``calibration.json``) into a fresh ``destination``."""
    source = Path(checkpoint_dir)
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {source} lacks {missing}; the trainable must save "
                                "the model with vae.save(model, checkpoint_dir)")
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy2(source / name, partial / name)
    calibration = fit_calibration(source, validation_labels, quantile)
    if calibration is not None:
        calibration.to_json(partial / CALIBRATION_FILE)
    shutil.rmtree(destination, ignore_errors=True)
    partial.rename(destination)
    return destination
