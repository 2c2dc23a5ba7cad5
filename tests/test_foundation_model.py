"""AitexVAE: shapes for every activation × covariance × size × channels, output ranges."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from vae.config import VAEConfig
from vae.model import AitexVAE, VAEOutput, build_model
from vae.posterior import DiagonalPosterior, FullPosterior, LowRankPosterior

ACTIVATIONS = ["sigmoid", "tanh", "relu", "none"]
COVARIANCES = {"diagonal": DiagonalPosterior, "full": FullPosterior, "lowrank": LowRankPosterior}
REFERENCE = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
             "none": lambda t: t}


def _config(activation: str, covariance: str, size: int, channels: int, bce: bool | None = None):
    bce = activation in ("sigmoid", "none") if bce is None else bce
    return VAEConfig().with_overrides({
        "model.output_activation": activation, "model.covariance": covariance,
        "model.image_size": size, "model.in_channels": channels, "model.latent_dim": 8,
        "model.rank": 2, "loss.bce_weight": 1.0 if bce else 0.0, "loss.mse_weight": 1.0})


@pytest.mark.parametrize(("activation", "covariance", "size", "channels"),
                         list(itertools.product(ACTIVATIONS, COVARIANCES, [64, 256], [1, 3])))
def test_shapes_and_activation(activation, covariance, size, channels):
    config = _config(activation, covariance, size, channels)
    torch.manual_seed(0)
    model = build_model(config).eval()
    assert model.config is config
    assert model.feature_dim == 256 * (size // 16) ** 2
    batch = 2 if size == 64 else 1
    x = torch.rand(batch, channels, size, size)
    output = model(x)
    assert isinstance(output, VAEOutput)
    assert output.recon.shape == x.shape and output.recon.dtype == torch.float32
    assert output.z.shape == (batch, 8)
    assert isinstance(output.posterior, COVARIANCES[covariance])
    assert output.posterior.mean.shape == (batch, 8) and output.posterior.kl().shape == (batch,)
    raw = model.decoder(model.fc_dec(output.z))  # the decoder output before the activation
    if config.recon_is_logits:
        assert torch.equal(output.logits, raw)
        torch.testing.assert_close(output.recon, torch.sigmoid(raw))
    else:
        assert output.logits is None
        torch.testing.assert_close(output.recon, REFERENCE[activation](raw))
    recon = model.reconstruct(x)  # decodes the mean: deterministic
    assert recon.shape == x.shape and torch.equal(recon, model.reconstruct(x))
    torch.testing.assert_close(recon, model.decode(output.posterior.mean)[0])


@pytest.mark.parametrize(("activation", "bce", "low", "high"), [
    ("sigmoid", True, 0.0, 1.0), ("tanh", False, -1.0, 1.0), ("relu", False, 0.0, None),
    ("none", True, 0.0, 1.0), ("none", False, None, None)])
def test_output_range_matches_activation(activation, bce, low, high):
    model = build_model(_config(activation, "diagonal", 32, 1, bce=bce)).eval()
    with torch.no_grad():  # saturate: raw outputs far beyond any range, of both signs
        model.decoder[-1].weight.mul_(1e4)
    recon = model.reconstruct(torch.rand(4, 1, 32, 32))
    assert torch.isfinite(recon).all()
    if low is not None:
        assert recon.min() >= low
        assert recon.min() <= low + 1e-3  # the range is used, not just respected
    else:
        assert recon.min() < -1.0
    if high is not None:
        assert recon.max() <= high and recon.max() >= high - 1e-3
    else:
        assert recon.max() > 1.0


def test_recon_is_logits_requires_activation_none():
    config = _config("sigmoid", "diagonal", 32, 1)
    with pytest.raises(ValueError, match="output_activation='none'"):
        AitexVAE(config.model, recon_is_logits=True)


def test_wrong_input_shape_is_named():
    model = build_model(_config("sigmoid", "diagonal", 64, 1))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, 64, 64\), got \(2, 3, 64, 64\)"):
        model.encode(torch.rand(2, 3, 64, 64))


def test_sampling_is_random_but_seedable():
    model = build_model(_config("sigmoid", "diagonal", 32, 1)).eval()
    x = torch.rand(2, 1, 32, 32)
    first = model(x, torch.Generator().manual_seed(5)).z
    assert torch.equal(first, model(x, torch.Generator().manual_seed(5)).z)
    assert not torch.equal(first, model(x, torch.Generator().manual_seed(6)).z)


@pytest.mark.parametrize(("covariance", "latent_dim"), [("full", 1), ("lowrank", 2), ("diagonal", 1)])
def test_smallest_latent_dims_build_cleanly(covariance, latent_dim):
    config = VAEConfig().with_overrides({"model.image_size": 32, "model.latent_dim": latent_dim,
                                         "model.covariance": covariance, "model.rank": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Initializing zero-element tensors is a no-op"
        model = build_model(config)
    output = model(torch.rand(2, 1, 32, 32))
    assert output.z.shape == (2, latent_dim)
    assert output.posterior.covariance().shape == (2, latent_dim, latent_dim)
    assert torch.isfinite(output.posterior.kl()).all()
