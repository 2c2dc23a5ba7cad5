"""The trial checkpoint format: the one owner of what a trial's checkpoint directory holds.

A checkpoint directory (what the trainable reports to Tune each epoch) holds

- ``model.safetensors`` + ``config.json``: ``vae.save`` output, the model as it scored (its
  ``score`` section names the scorer the trial reported);
- ``val_scores.npy`` (and ``real_val_scores.npy`` when the data has real defects): the per-patch
  scores behind ``val/auroc`` (and ``val/real_auroc``), in split order; calibration is fit
  from them;
- ``state.json``: the epoch and the metrics reported with it;
- ``optimizer.pt``: Adam's state, which only resuming the trial needs. It is written with every
  checkpoint (each is the trial's latest when written) and pruned (``prune``) once enough newer
  ones exist that no resume can start from it (``search.trainable.OptimizerStateWindow``), so an
  older kept best checkpoint holds only what ``pull`` needs (``PULL_FILES``).

Nothing here unpickles: the optimizer state goes through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae.io import CONFIG_FILE, WEIGHTS_FILE, load, save
from vae.model import AitexVAE

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
SCORES_FILE = "val_scores.npy"
REAL_SCORES_FILE = "real_val_scores.npy"
# A pulled model is the weights, the config and a calibration fit from the validation scores.
PULL_FILES = (WEIGHTS_FILE, CONFIG_FILE, SCORES_FILE)


@dataclass(frozen=True)
class Restored:
    """A checkpoint read back: the model, Adam's state (None once pruned) and the epoch."""

    model: AitexVAE
    optimizer_state: dict[str, Any] | None
    epoch: int


def write(directory: str | Path, model: AitexVAE, optimizer: torch.optim.Optimizer,
          epoch: int, metrics: dict[str, float], scores: np.ndarray,
          real_scores: np.ndarray | None = None) -> Path:
    """One checkpoint in ``directory`` (created if needed); returns it."""
    directory = Path(directory)
    save(model, directory)
    torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)
    np.save(directory / SCORES_FILE, np.asarray(scores, np.float32))
    if real_scores is not None:
        np.save(directory / REAL_SCORES_FILE, np.asarray(real_scores, np.float32))
    (directory / STATE_FILE).write_text(json.dumps({"epoch": epoch, "metrics": metrics},
                                                   indent=2, sort_keys=True) + "\n")
    return directory


def read_state(directory: str | Path) -> dict[str, Any]:
    """``state.json``: ``{"epoch": int, "metrics": {...}}``."""
    path = Path(directory) / STATE_FILE
    try:
        state = json.loads(path.read_text())
        return {"epoch": int(state["epoch"]), "metrics": dict(state.get("metrics", {}))}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a checkpoint state file ({error}); expected "
                         "{\"epoch\": N, \"metrics\": {...}} as vae.checkpoint.write writes it"
                         ) from None


def read(directory: str | Path, map_location: str | torch.device = "cpu") -> Restored:
    """The model, the optimizer state (None when pruned) and the epoch of a checkpoint."""
    directory = Path(directory)
    optimizer_path = directory / OPTIMIZER_FILE
    optimizer_state = torch.load(optimizer_path, map_location=map_location, weights_only=True) \
        if optimizer_path.is_file() else None
    return Restored(load(directory, map_location=map_location), optimizer_state,
                    read_state(directory)["epoch"])


def copy_for_pull(filesystem: Any, directory: str, destination: str | Path) -> Path:
    """Copy only ``PULL_FILES`` of a checkpoint into ``destination`` (created); returns it.

    ``filesystem``: a ``pyarrow.fs.FileSystem`` holding ``directory`` (Tune's storage, local or
    a bucket), or None for a local path. Adam's state (most of a checkpoint's bytes) stays
    behind. A checkpoint without its weights raises ``FileNotFoundError``; one without scores
    copies without them (no calibration then).
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in PULL_FILES:
        source = f"{str(directory).rstrip('/')}/{name}"
        try:
            if filesystem is None:
                shutil.copyfile(source, destination / name)
                continue
            with filesystem.open_input_stream(source) as stream, \
                    open(destination / name, "wb") as out:
                shutil.copyfileobj(stream, out, length=1 << 20)
        except FileNotFoundError:
            if name == SCORES_FILE:
                continue
            raise FileNotFoundError(f"checkpoint {directory} has no {name}") from None
    return destination


def prune(filesystem: Any, directory: str) -> bool:
    """Delete the optimizer state of a checkpoint that is no longer a trial's latest.

    ``filesystem`` is a ``pyarrow.fs.FileSystem`` (local or a bucket, as Tune stores
    checkpoints) and ``directory`` the checkpoint's path on it. Returns whether a file was
    deleted; a checkpoint Tune has already removed is not an error.
    """
    try:
        filesystem.delete_file(f"{directory.rstrip('/')}/{OPTIMIZER_FILE}")
    except (FileNotFoundError, OSError):
        return False
    return True
