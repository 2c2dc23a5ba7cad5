"""vae.save / vae.load: safetensors + JSON round trip; pickle payloads are never unpickled."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import vae
from vae.config import ConfigError, VAEConfig
from vae.io import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE
from vae.model import build_model


class _CreatesFileWhenUnpickled:
    """Unpickling this opens (creates) ``path``: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _trained_like_model(config: VAEConfig):
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # move away from the init so a load that re-initialises would differ
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    return model


@pytest.mark.parametrize("overrides", [
    {},
    {"model.covariance": "full", "model.output_activation": "none", "loss.fft_weight": 0.5},
    {"model.covariance": "lowrank", "model.rank": 3, "model.in_channels": 3,
     "model.output_activation": "tanh", "loss.bce_weight": 0.0, "loss.mse_weight": 1.0},
])
def test_save_load_gives_identical_outputs_and_config(tmp_path, overrides):
    config = VAEConfig().with_overrides({"model.image_size": 64, "model.latent_dim": 12,
                                         **overrides})
    model = _trained_like_model(config).eval()
    vae.save(model, tmp_path / "m")
    document = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert document == {"format_version": FORMAT_VERSION, "config": config.to_dict()}
    loaded = vae.load(tmp_path / "m")
    assert loaded.config == config and not loaded.training
    assert loaded.recon_is_logits == config.recon_is_logits
    x = torch.rand(2, config.model.in_channels, 64, 64)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    generator_a, generator_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(loaded(x, generator_a).recon, model(x, generator_b).recon)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_save_writes_contiguous_weights_of_a_channels_last_model(tmp_path):
    config = VAEConfig().with_overrides({"model.image_size": 32})
    model = _trained_like_model(config).to(memory_format=torch.channels_last).eval()
    vae.save(model, tmp_path)
    loaded = vae.load(tmp_path).to(memory_format=torch.channels_last)
    x = torch.rand(2, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))


def test_load_refuses_a_pickle_payload_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload_dir = tmp_path / "checkpoint"
    payload_dir.mkdir()
    with open(payload_dir / "model.pt", "wb") as handle:
        pickle.dump(_CreatesFileWhenUnpickled(str(marker)), handle, protocol=2)
    with pytest.raises(ValueError, match=r"pickle payloads \['model.pt'\].*refusing to unpickle"):
        vae.load(payload_dir)
    assert not marker.exists()
    # The payload is real: unpickling it would have created the file.
    with open(payload_dir / "model.pt", "rb") as handle:
        pickle.load(handle).close()
    assert marker.exists()


def test_load_names_a_missing_or_invalid_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        vae.load(tmp_path)
    model = _trained_like_model(VAEConfig().with_overrides({"model.image_size": 32}))
    vae.save(model, tmp_path)
    document = json.loads((tmp_path / CONFIG_FILE).read_text())
    document["config"]["model"]["latnt_dim"] = 4
    (tmp_path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="model.latnt_dim"):
        vae.load(tmp_path)
    document["format_version"] = 99
    (tmp_path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(ValueError, match="format_version 99"):
        vae.load(tmp_path)


def test_save_needs_the_config_on_the_model(tmp_path):
    model = build_model(VAEConfig().with_overrides({"model.image_size": 32}))
    del model.config
    with pytest.raises(ValueError, match="model.config"):
        vae.save(model, tmp_path)


def _rewrite_config(folder, **model_changes) -> None:
    document = json.loads((folder / CONFIG_FILE).read_text())
    document["config"]["model"].update(model_changes)
    (folder / CONFIG_FILE).write_text(json.dumps(document))


def test_a_config_asking_for_a_huge_model_is_refused_before_anything_is_allocated(tmp_path):
    import time

    from tests.support.peak_memory import peak_mib

    folder = vae.save(build_model(VAEConfig().with_overrides({"model.image_size": 32,
                                                               "model.latent_dim": 4})),
                      tmp_path / "m")
    _rewrite_config(folder, image_size=1024, latent_dim=512)  # ~1.2 G parameters, ~5 GB
    with pytest.raises(ValueError, match=r"describes a model of 1,208,643,873 parameters; "
                                         r"refusing more than 200,000,000"):
        vae.load(folder)
    # The same refusal in a fresh process, whose peak memory is this call's alone.
    code = "import sys, vae\ntry:\n    vae.load(sys.argv[1])\nexcept ValueError:\n    pass"
    started = time.monotonic()
    assert peak_mib(code, str(folder)) < 1024  # MiB: torch itself, not 5 GB of weights
    assert time.monotonic() - started < 60


def test_weights_of_another_shape_are_refused_from_the_header(tmp_path):
    folder = vae.save(build_model(VAEConfig().with_overrides({"model.image_size": 32,
                                                               "model.latent_dim": 4})),
                      tmp_path / "m")
    _rewrite_config(folder, latent_dim=8)
    with pytest.raises(ValueError, match=r"does not match its config.json: \d+ tensor\(s\) "
                                         r"differ, e.g. \['fc_dec.weight'"):
        vae.load(folder)
    (folder / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    _rewrite_config(folder, latent_dim=4)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        vae.load(folder)
