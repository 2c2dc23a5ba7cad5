"""The resize-conv decoder: shapes for every size, channel count and activation; flat fabric
decodes flat (no checkerboard), where the seed's stride-4 transposed decoder leaves a grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vae.config import ConfigError, VAEConfig
from vae.model import build_model
from vae.train import make_optimizer, train_epoch

ACTIVATIONS = ["sigmoid", "tanh", "relu", "none"]


@pytest.mark.parametrize(("activation", "size", "channels"),
                         list(itertools.product(ACTIVATIONS, [32, 48, 64, 256], [1, 3])))
def test_resize_decoder_shapes_and_ranges(activation, size, channels):
    bce = activation in ("sigmoid", "none")
    config = VAEConfig().with_overrides({
        "model.decoder": "resize", "model.output_activation": activation,
        "model.image_size": size, "model.in_channels": channels, "model.latent_dim": 8,
        "loss.bce_weight": 1.0 if bce else 0.0, "loss.mse_weight": 1.0})
    torch.manual_seed(0)
    model = build_model(config).eval()
    x = torch.rand(2, channels, size, size)
    output = model(x)
    assert output.recon.shape == (2, channels, size, size)
    assert model.reconstruct(x).shape == (2, channels, size, size)
    low = -1.0 if activation == "tanh" else 0.0
    assert float(output.recon.min()) >= low
    if activation in ("sigmoid", "tanh", "none"):  # "none" with BCE: sigmoid of the logits
        assert float(output.recon.max()) <= 1.0
    assert (output.logits is not None) == (activation == "none")


def test_decoder_knobs_are_validated():
    with pytest.raises(ConfigError, match=r"model.decoder 'deconv'.*\['transposed', 'resize'\]"):
        VAEConfig().with_overrides({"model.decoder": "deconv"})
    with pytest.raises(ConfigError, match=r"model.decoder_width=2 .*\[4, 256\]"):
        VAEConfig().with_overrides({"model.decoder_width": 2})


def _fit_constant_and_phase_range(decoder: str) -> float:
    """Fit a tiny VAE to flat grey patches; the spread of its reconstruction over the 16
    phases of a 4×4 grid (what a stride-4 checkerboard modulates)."""
    config = VAEConfig().with_overrides({
        "model.image_size": 32, "model.decoder": decoder, "model.latent_dim": 4,
        "model.dropout": 0.0, "loss.mse_weight": 1.0, "loss.bce_weight": 0.0,
        "train.batch_size": 8, "train.learning_rate": 3e-3})
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = make_optimizer(model, config.train)
    images = np.full((32, 1, 32, 32), 128, np.uint8)
    for epoch in range(15):
        train_epoch(model, optimizer, images, config, torch.device("cpu"), epoch=epoch)
    model.eval()
    with torch.no_grad():
        recon = model.reconstruct(torch.full((1, 1, 32, 32), 128 / 255))[0, 0]
    phases = recon.reshape(8, 4, 8, 4).mean(dim=(0, 2))  # (4, 4): mean value per grid phase
    return float(phases.max() - phases.min())


def test_a_flat_patch_is_reconstructed_without_a_checkerboard():
    resize, transposed = (_fit_constant_and_phase_range(d) for d in ("resize", "transposed"))
    assert resize < 2e-4  # under 1/20 of a gray level
    assert transposed > 5 * resize  # the control: the seed's decoder does leave a grid


@pytest.mark.parametrize(("size", "tile", "decoder"), [(64, 32, "transposed"), (256, 64, "resize"),
                                                        (96, 48, "transposed")])
def test_a_tiled_model_reconstructs_each_tile_on_its_own(size, tile, decoder):
    config = VAEConfig().with_overrides({
        "model.image_size": size, "model.tile_size": tile, "model.decoder": decoder,
        "model.latent_dim": 8, "model.covariance": "full"})
    torch.manual_seed(0)
    model = build_model(config).eval()
    x = torch.rand(2, 1, size, size)
    output = model(x)
    tiles = (size // tile) ** 2
    assert output.recon.shape == (2, 1, size, size)
    assert output.posterior.mean.shape == (2 * tiles, 8)
    assert torch.equal(model._untile(model._tiles(x)), x)
    assert torch.equal(model._tiles(x)[1], x[0, :, :tile, tile:2 * tile])  # row-major order
    with torch.no_grad():
        before = model.reconstruct(x)
        changed = x.clone()
        changed[:, :, :tile, tile:2 * tile] = 1.0  # only tile (row 0, column 1)
        after = model.reconstruct(changed)
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[:tile, tile:2 * tile] = True
    assert not torch.equal(after[..., inside], before[..., inside])
    assert torch.equal(after[..., ~inside], before[..., ~inside])  # every other tile as before
    # The per-image KL is the sum over its tiles.
    from vae.losses import vae_loss

    kl = vae_loss(output, x, config.loss)["kl"]
    per_tile = output.posterior.kl().view(2, tiles).sum(1).mean()
    torch.testing.assert_close(kl, per_tile)


def test_the_tile_size_is_validated():
    with pytest.raises(ConfigError, match=r"model.tile_size=48 is invalid.*divides "
                                          r"model.image_size=256"):
        VAEConfig().with_overrides({"model.tile_size": 48})
