"""Posteriors: closed-form KL against torch.distributions, sample moments, stability at init."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as dist

from vae.config import VAEConfig
from vae.losses import vae_loss
from vae.model import build_model
from vae.posterior import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    DiagonalPosterior,
    FullPosterior,
    LowRankPosterior,
)

D = 16


def _random_scale_tril(gen: torch.Generator, batch: int, d: int) -> torch.Tensor:
    lower = torch.randn(batch, d, d, generator=gen, dtype=torch.float64).tril(-1) * 0.5
    diagonal = torch.rand(batch, d, generator=gen, dtype=torch.float64) * 2.0 + 0.1
    return lower + torch.diag_embed(diagonal)


def _standard_mvn(batch: int, d: int) -> dist.MultivariateNormal:
    return dist.MultivariateNormal(torch.zeros(batch, d, dtype=torch.float64),
                                   torch.eye(d, dtype=torch.float64).expand(batch, d, d))


def test_diagonal_kl_matches_torch_normal():
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(6, D, generator=gen, dtype=torch.float64) * 2.0
    logvar = torch.randn(6, D, generator=gen, dtype=torch.float64) * 2.0
    reference = dist.kl_divergence(dist.Normal(mu, torch.exp(0.5 * logvar)),
                                   dist.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    ours = DiagonalPosterior(mu, logvar).kl().double()
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=0)


def test_full_kl_matches_torch_multivariate_normal():
    gen = torch.Generator().manual_seed(2)
    mu = torch.randn(6, D, generator=gen, dtype=torch.float64)
    scale_tril = _random_scale_tril(gen, 6, D)
    reference = dist.kl_divergence(dist.MultivariateNormal(mu, scale_tril=scale_tril),
                                   _standard_mvn(6, D))
    ours = FullPosterior(mu, scale_tril).kl().double()
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=0)


@pytest.mark.parametrize("rank", [1, 3])
def test_lowrank_kl_matches_torch_lowrank_normal(rank):
    gen = torch.Generator().manual_seed(3 + rank)
    mu = torch.randn(6, D, generator=gen, dtype=torch.float64)
    diag = torch.rand(6, D, generator=gen, dtype=torch.float64) * 2.0 + 0.05
    factor = torch.randn(6, D, rank, generator=gen, dtype=torch.float64)
    reference = dist.kl_divergence(dist.LowRankMultivariateNormal(mu, factor, diag),
                                   _standard_mvn(6, D))
    ours = LowRankPosterior(mu, diag, factor).kl().double()
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=0)


def _posteriors(batch: int):
    """The three families with correlated, non-trivial covariances (d = 4)."""
    gen = torch.Generator().manual_seed(7)
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0])
    scale_tril = _random_scale_tril(gen, 1, 4).float()[0]
    factor = torch.randn(4, 2, generator=gen)
    diag = torch.tensor([0.3, 1.0, 0.5, 2.0])
    logvar = torch.tensor([0.0, -1.0, 1.0, 0.5])
    return [
        DiagonalPosterior(mu.expand(batch, 4), logvar.expand(batch, 4)),
        FullPosterior(mu.expand(batch, 4), scale_tril.expand(batch, 4, 4)),
        LowRankPosterior(mu.expand(batch, 4), diag.expand(batch, 4), factor.expand(batch, 4, 2)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["diagonal", "full", "lowrank"])
def test_rsample_has_the_posterior_mean_and_covariance(index):
    posterior = _posteriors(20_000)[index]
    z = posterior.rsample(torch.Generator().manual_seed(11))
    assert z.shape == (20_000, 4)
    expected_cov = posterior.covariance()[0]
    assert not torch.allclose(expected_cov, torch.diag(expected_cov.diagonal())) or index == 0
    torch.testing.assert_close(z.mean(0), posterior.mean[0], atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), expected_cov, atol=0.08, rtol=0.05)


def test_rsample_is_differentiable_with_respect_to_the_parameters():
    mu = torch.zeros(2, 3, requires_grad=True)
    scale_tril = torch.eye(3).repeat(2, 1, 1).requires_grad_(True)
    FullPosterior(mu, scale_tril).rsample(torch.Generator().manual_seed(0)).sum().backward()
    assert torch.equal(mu.grad, torch.ones(2, 3))
    assert scale_tril.grad.abs().sum() > 0


@pytest.mark.parametrize("covariance", ["diagonal", "full", "lowrank"])
def test_heads_are_stable_at_init_for_latent_256(covariance):
    config = VAEConfig().with_overrides({"model.latent_dim": 256, "model.covariance": covariance,
                                         "model.rank": 8})
    torch.manual_seed(0)
    model = build_model(config)
    x = torch.rand(2, 1, 256, 256)
    output = model(x)
    posterior = output.posterior
    assert posterior.mean.shape == (2, 256) and output.z.shape == (2, 256)
    covariance_matrix = posterior.covariance()
    assert torch.isfinite(covariance_matrix).all()
    torch.linalg.cholesky(covariance_matrix)  # positive definite, or this raises
    kl = posterior.kl()
    assert kl.shape == (2,) and torch.isfinite(kl).all() and (kl >= -1e-3).all()
    if covariance != "diagonal":  # zero-initialised factor: starts as the diagonal posterior
        off_diagonal = covariance_matrix - torch.diag_embed(covariance_matrix.diagonal(0, 1, 2))
        assert off_diagonal.abs().max() == 0
    terms = vae_loss(output, x, config.loss)
    terms["loss"].backward()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name


def test_logvar_is_clamped_and_full_scale_tril_is_lower_with_positive_diagonal():
    config = VAEConfig().with_overrides({"model.image_size": 32, "model.latent_dim": 6,
                                         "model.covariance": "full"})
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # push logvar far out and make the off-diagonal part non-zero
        model.head.fc_logvar.bias.fill_(1e4)
        torch.nn.init.normal_(model.head.off_diagonal.out.weight)
    posterior = model.encode(torch.rand(3, 1, 32, 32))
    scale_tril = posterior.scale_tril
    assert torch.equal(scale_tril, scale_tril.tril())
    assert (scale_tril.tril(-1) != 0).any()
    diagonal = scale_tril.diagonal(0, 1, 2)
    torch.testing.assert_close(diagonal, torch.full_like(diagonal, LOGVAR_MAX / 2).exp())
    assert LOGVAR_MIN < 0 < LOGVAR_MAX
    reference = dist.kl_divergence(dist.MultivariateNormal(posterior.mean.double(),
                                                           scale_tril=scale_tril.double()),
                                   _standard_mvn(3, 6))
    torch.testing.assert_close(posterior.kl().double(), reference, rtol=1e-4, atol=0)
