"""Loss terms: FFT behaviour, BCE logits vs probabilities, reductions and weighting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vae.config import LossConfig
from vae.losses import fft_loss, vae_loss
from vae.model import VAEOutput
from vae.posterior import DiagonalPosterior


def _texture(batch: int = 3, size: int = 64) -> torch.Tensor:
    """A periodic weave-like pattern in [0.1, 0.9], like fabric."""
    gen = torch.Generator().manual_seed(0)
    grid = torch.arange(size, dtype=torch.float32)
    weave = torch.sin(grid * 2 * math.pi / 8)[:, None] * torch.cos(grid * 2 * math.pi / 6)[None, :]
    noise = torch.rand(batch, 1, size, size, generator=gen) * 0.1
    return (0.5 + 0.35 * weave + noise - 0.05).clamp(0, 1)


def _output(recon: torch.Tensor, logits: torch.Tensor | None = None, batch: int | None = None):
    batch = batch or len(recon)
    posterior = DiagonalPosterior(torch.zeros(batch, 4), torch.zeros(batch, 4))
    return VAEOutput(recon=recon, logits=logits, posterior=posterior, z=posterior.mean)


def test_fft_loss_is_zero_for_identical_images_and_grows_with_perturbation():
    x = _texture()
    assert fft_loss(x, x.clone()).item() == 0.0
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=gen)
    values = [fft_loss(x + scale * noise, x).item() for scale in (0.01, 0.05, 0.2, 0.5)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] > 0


def test_fft_loss_ignores_a_circular_shift_but_not_a_defect():
    x = _texture()
    shifted = torch.roll(x, shifts=(3, 2), dims=(-2, -1))  # same texture, different phase
    assert fft_loss(shifted, x).item() < 1e-2
    defect = x.clone()
    defect[..., 20:30, 10:50] = 0.0  # a dark stripe (a broken pick)
    assert fft_loss(defect, x).item() > 100.0
    assert F.mse_loss(shifted, x).item() > 0.01  # pixel MSE does punish the shift


def test_fft_loss_is_float32_under_bf16_autocast():
    x = _texture()
    recon = (x + 0.1).clamp(0, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = fft_loss(recon.bfloat16(), x)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, fft_loss(recon.bfloat16().float(), x))


def test_bce_with_logits_equals_bce_on_probabilities():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 1, 16, 16, generator=gen) * 3
    x = torch.rand(3, 1, 16, 16, generator=gen)
    config = LossConfig(bce_weight=1.0, mse_weight=0.0)
    with_logits = vae_loss(_output(torch.sigmoid(logits), logits), x, config)
    with_probabilities = vae_loss(_output(torch.sigmoid(logits)), x, config)
    torch.testing.assert_close(with_logits["bce"], with_probabilities["bce"], rtol=1e-5, atol=0)
    expected = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum") / 3
    torch.testing.assert_close(with_logits["bce"], expected, rtol=1e-5, atol=0)


def test_logits_keep_bce_finite_where_probabilities_saturate():
    logits = torch.full((1, 1, 4, 4), -200.0)
    x = torch.ones(1, 1, 4, 4)
    config = LossConfig(bce_weight=1.0)
    bce = vae_loss(_output(torch.sigmoid(logits), logits), x, config)["bce"]
    torch.testing.assert_close(bce, torch.tensor(200.0 * 16))  # exact, not capped at log(0)


def test_terms_are_summed_per_image_averaged_over_batch_and_weighted():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 8, 8, generator=gen)
    recon = torch.rand(4, 1, 8, 8, generator=gen)
    config = LossConfig(mse_weight=2.0, bce_weight=0.5, fft_weight=0.25, kl_weight=3.0)
    posterior = DiagonalPosterior(torch.ones(4, 2), torch.zeros(4, 2))  # KL = 0.5·2·1 = 1
    output = VAEOutput(recon=recon, logits=None, posterior=posterior, z=posterior.mean)
    terms = vae_loss(output, x, config)
    assert set(terms) == {"loss", "mse", "bce", "fft", "kl"}
    torch.testing.assert_close(terms["mse"], (recon - x).square().sum() / 4)
    torch.testing.assert_close(terms["kl"], torch.tensor(1.0))
    expected = 2.0 * terms["mse"] + 0.5 * terms["bce"] + 0.25 * terms["fft"] + 3.0 * terms["kl"]
    torch.testing.assert_close(terms["loss"], expected)
    # Batch-size independent: the same images repeated give the same per-image loss.
    doubled = vae_loss(_output(recon.repeat(2, 1, 1, 1), batch=8), x.repeat(2, 1, 1, 1), config)
    torch.testing.assert_close(doubled["mse"], terms["mse"])


@pytest.mark.parametrize("weights", [dict(mse_weight=1.0, bce_weight=0.0, fft_weight=0.0)])
def test_zero_weight_terms_report_zero_except_mse(weights):
    x = _texture(2, 16)
    recon = (x * 0.9).requires_grad_(True)
    terms = vae_loss(_output(recon), x, LossConfig(**weights))
    assert terms["bce"].item() == 0.0 and terms["fft"].item() == 0.0
    assert terms["mse"].item() > 0
    only_bce = vae_loss(_output(recon), x, LossConfig(mse_weight=0.0, bce_weight=1.0))
    assert only_bce["mse"].item() > 0 and not only_bce["mse"].requires_grad


def test_bce_on_saturated_probabilities_has_finite_gradient_and_nan_propagates():
    logits = torch.tensor([-200.0, -30.0, 0.0, 30.0, 200.0]).view(1, 1, 1, 5).requires_grad_(True)
    probabilities = torch.sigmoid(logits)
    assert probabilities[0, 0, 0, -1] == 1.0 and probabilities[0, 0, 0, 0] == 0.0  # saturated
    x = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0]).view(1, 1, 1, 5)
    terms = vae_loss(_output(probabilities), x, LossConfig(bce_weight=1.0))
    assert torch.isfinite(terms["bce"]) and terms["bce"].item() > 80.0 * 2
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all()
    nan = vae_loss(_output(torch.full((1, 1, 2, 2), float("nan"))), torch.zeros(1, 1, 2, 2),
                   LossConfig(bce_weight=1.0))
    assert math.isnan(nan["bce"].item()) and math.isnan(nan["loss"].item())
