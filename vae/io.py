"""Save and load a model as ``model.safetensors`` + ``config.json`` — nothing is unpickled.

``vae.save(model, dir)`` / ``vae.load(dir)`` are the entry points downstream users and the
``pull`` command rely on. A pickle can run arbitrary code when loaded (e.g. through
``__reduce__``), so ``load`` refuses directories that only offer pickle payloads. (What else a
trial's checkpoint holds is ``vae.checkpoint``'s.)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vae.config import VAEConfig
from vae.model import AitexVAE, build_model

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# Version 2 added config keys (model.decoder, model.decoder_width, model.tile_size,
# train.denoise_probability, train.flip, score.normalize, score.select). Their defaults are
# exactly what version 1 did, so a version-1 folder loads as it is and scores identically.
# Version 3 added model.input_resize (default 0: native resolution, what versions 1-2 did).
# Version 4 added score.reference (default "none": each patch on its own, what 1-3 did).
# Version 5 added its value "strip_peak"; "strip" scores as it did in version 4.
# Version 6 added "strip_fabric"; "strip_peak" and "strip" score as they did in version 5.
FORMAT_VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
MAX_PARAMETERS = 200_000_000  # ~100x this project's largest search-space model
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


def save(model: AitexVAE, directory: str | Path) -> Path:
    """Write the weights (contiguous, CPU) and the resolved config; returns the directory."""
    config = getattr(model, "config", None)
    if not isinstance(config, VAEConfig):
        raise ValueError("model has no VAEConfig in `model.config`; build it with "
                         "vae.model.build_model(config) so that it can be rebuilt on load")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # channels_last weights are permuted views; safetensors stores plain row-major tensors.
    state = {name: tensor.detach().to("cpu").contiguous()
             for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
    document = {"format_version": FORMAT_VERSION, "config": config.to_dict()}
    (directory / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return directory


def load_config(directory: str | Path) -> VAEConfig:
    """The resolved config stored beside the weights (strictly validated)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}; expected a directory written "
                                "by vae.save(model, directory)")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    version = document.get("format_version") if isinstance(document, dict) else None
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ValueError(f"{path}: format_version {version!r} is not supported; "
                         f"this code reads versions {list(READABLE_VERSIONS)}")
    if "config" not in document:
        raise ValueError(f"{path} has no 'config' section (keys: {sorted(document)}); expected "
                         "the document vae.save writes: {\"format_version\": ..., \"config\": ...}")
    return VAEConfig.from_dict(document["config"])


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> AitexVAE:
    """Rebuild the model from ``config.json`` and fill it from ``model.safetensors``.

    Returned in eval mode. Refuses a directory holding only pickle payloads.
    """
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        pickles = sorted(p.name for p in directory.glob("*") if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ValueError(f"{directory} holds pickle payloads {pickles} but no {WEIGHTS_FILE}; "
                             "refusing to unpickle (it can run arbitrary code). Re-save the "
                             "model with vae.save(model, directory)")
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {directory}; expected a directory "
                                "written by vae.save(model, directory)")
    config = load_config(directory)
    _check_shapes(weights, config)  # before anything is allocated
    model = build_model(config)
    state = load_file(str(weights), device=str(map_location))
    broken = sorted(name for name, tensor in state.items()
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()))
    if broken:
        raise ValueError(f"{weights} holds NaN or infinite weights in {broken[:3]}"
                         f"{' ...' if len(broken) > 3 else ''}; refusing to load a model that "
                         "cannot score (a diverged or corrupted checkpoint)")
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def _check_shapes(weights: Path, config: VAEConfig) -> None:
    """Refuse a config whose model would not fit these weights, or is absurdly large, *before*
    building it: the config is built on PyTorch's ``meta`` device (shapes, no memory), and the
    weights' shapes come from the safetensors header (no tensor is read). A crafted config.json
    asking for a huge model thus costs nothing."""
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in build_model(config).state_dict().items()}
    parameters = sum(math.prod(shape) for shape in expected.values())
    if parameters > MAX_PARAMETERS:
        raise ValueError(f"{weights.parent / CONFIG_FILE} describes a model of {parameters:,} "
                         f"parameters; refusing more than {MAX_PARAMETERS:,} (not a file vae.save "
                         "writes for this project's models)")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            stored = {name: tuple(handle.get_slice(name).get_shape())
                      for name in handle.keys()}  # noqa: SIM118 (a safe_open handle, no dict)
    except Exception as error:  # safetensors raises its own types for a damaged header
        raise ValueError(f"{weights} is not a readable safetensors file: {error}") from None
    if stored != expected:
        wrong = sorted(set(stored) ^ set(expected)) or sorted(
            name for name in expected if stored[name] != expected[name])
        raise ValueError(f"{weights} does not match its {CONFIG_FILE}: {len(wrong)} tensor(s) "
                         f"differ, e.g. {wrong[:3]}; the two files come from different models")

