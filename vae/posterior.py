"""Gaussian posteriors q(z|x) = N(mu, Σ) with a reparameterised sample and closed-form KL.

Three covariance families, each with KL(q || N(0, I)) in closed form. For any Gaussian,
KL(N(μ, Σ) || N(0, I)) = ½ [tr Σ + μᵀμ − d − log det Σ] (the Gaussian KL with an identity
prior; Kingma & Welling 2014, App. B, is its diagonal case); the families differ only in how
tr Σ and log det Σ are computed cheaply:

- ``DiagonalPosterior``: Σ = diag(exp(logvar)) — the classic VAE.
- ``FullPosterior``: Σ = L Lᵀ with L lower-triangular, strictly positive diagonal;
  log det Σ = 2 Σᵢ log Lᵢᵢ, tr Σ = ‖L‖²_F.
- ``LowRankPosterior``: Σ = D + U Uᵀ (D diagonal, U of shape d × r); log det Σ by the matrix
  determinant lemma, log det D + log det(I_r + Uᵀ D⁻¹ U); tr Σ = Σ D + ‖U‖²_F.

All computations run in float32 with autocast off: a bf16 log-det or Cholesky would lose the
precision the KL needs, and these tensors are tiny next to the convolutions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vae.config import COVARIANCES, ModelConfig


def _no_autocast(t: Tensor) -> torch.autocast:
    return torch.autocast(device_type=t.device.type, enabled=False)


def _standard_normal(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


class Posterior:
    """A batch of Gaussians over R^d. ``mean`` is (B, d)."""

    mean: Tensor

    @property
    def latent_dim(self) -> int:
        return self.mean.shape[-1]

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """A differentiable sample z = mu + (noise shaped by Σ^½), shape (B, d)."""
        raise NotImplementedError

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample, shape (B,), in closed form."""
        raise NotImplementedError

    def covariance(self) -> Tensor:
        """Σ, shape (B, d, d) (dense; for tests and inspection, not for training)."""
        raise NotImplementedError

    def select(self, rows: Tensor) -> Posterior:
        """The posteriors of ``rows`` (indices into the batch), of the same family: every
        parameter tensor of a posterior is batch-first."""
        chosen = object.__new__(type(self))
        chosen.__dict__.update({name: value[rows] for name, value in vars(self).items()})
        return chosen


class DiagonalPosterior(Posterior):
    """N(mu, diag(exp(logvar))); Kingma & Welling 2014, App. B:
    KL = −½ Σ (1 + logvar − mu² − exp(logvar))."""

    def __init__(self, mu: Tensor, logvar: Tensor) -> None:
        self.mean = mu.float()
        self.logvar = logvar.float()

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        with _no_autocast(self.mean):
            eps = _standard_normal(self.mean.shape, self.mean, generator)
            return self.mean + eps * torch.exp(0.5 * self.logvar)

    def kl(self) -> Tensor:
        with _no_autocast(self.mean):
            return 0.5 * (self.logvar.exp() + self.mean.square() - 1.0 - self.logvar).sum(-1)

    def covariance(self) -> Tensor:
        return torch.diag_embed(self.logvar.exp())


class FullPosterior(Posterior):
    """N(mu, L Lᵀ) with ``scale_tril`` L (B, d, d): lower-triangular, diagonal > 0."""

    def __init__(self, mu: Tensor, scale_tril: Tensor) -> None:
        self.mean = mu.float()
        self.scale_tril = scale_tril.float()

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        with _no_autocast(self.mean):
            eps = _standard_normal(self.mean.shape, self.mean, generator)
            return self.mean + (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)

    def kl(self) -> Tensor:
        with _no_autocast(self.mean):
            trace = self.scale_tril.square().sum((-2, -1))  # tr(L Lᵀ) = ‖L‖²_F
            log_det = 2.0 * self.scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            return 0.5 * (trace + self.mean.square().sum(-1) - self.latent_dim - log_det)

    def covariance(self) -> Tensor:
        return self.scale_tril @ self.scale_tril.mT


class LowRankPosterior(Posterior):
    """N(mu, D + U Uᵀ) with ``diag`` D (B, d) > 0 and ``factor`` U (B, d, r)."""

    def __init__(self, mu: Tensor, diag: Tensor, factor: Tensor) -> None:
        self.mean = mu.float()
        self.diag = diag.float()
        self.factor = factor.float()

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        # z = mu + D^½ eps_d + U eps_r has covariance D + U Uᵀ (eps_d, eps_r independent).
        with _no_autocast(self.mean):
            eps_d = _standard_normal(self.mean.shape, self.mean, generator)
            eps_r = _standard_normal(self.factor.shape[:-2] + self.factor.shape[-1:], self.mean,
                                     generator)
            return (self.mean + self.diag.sqrt() * eps_d
                    + (self.factor @ eps_r.unsqueeze(-1)).squeeze(-1))

    def kl(self) -> Tensor:
        with _no_autocast(self.mean):
            rank = self.factor.shape[-1]
            # Matrix determinant lemma: det(D + UUᵀ) = det(D) · det(I_r + Uᵀ D⁻¹ U); the r × r
            # "capacitance" matrix is symmetric positive definite, so its log-det comes from a
            # Cholesky factor (Harville 1997, Thm 18.1.1; as in torch's LowRankMultivariateNormal).
            scaled = self.factor / self.diag.unsqueeze(-1)  # D⁻¹ U
            capacitance = torch.eye(rank, device=self.diag.device) + self.factor.mT @ scaled
            # cholesky_ex: a failed factorisation (NaN parameters, or a D so small next to U
            # that rounding breaks positive-definiteness) becomes a NaN KL, which training
            # reports as NonFiniteLossError, instead of an exception from deep inside the loss.
            chol, info = torch.linalg.cholesky_ex(capacitance)
            log_det = (self.diag.log().sum(-1)
                       + 2.0 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1))
            log_det = torch.where(info == 0, log_det, torch.nan)
            trace = self.diag.sum(-1) + self.factor.square().sum((-2, -1))
            return 0.5 * (trace + self.mean.square().sum(-1) - self.latent_dim - log_det)

    def covariance(self) -> Tensor:
        return torch.diag_embed(self.diag) + self.factor @ self.factor.mT


# -- heads: flattened encoder features h (B, F) → Posterior ---------------------------------------

# log σ² is clamped to a range where exp() stays far from fp32 under/overflow (σ from 3e-7 to
# 2e4); the same bounds as the diagonal Gaussian of latent-diffusion/diffusers VAEs.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
# Width of the bottleneck that feeds the off-diagonal / low-rank factors (see _FactorBranch).
FACTOR_BOTTLENECK = 128


class PosteriorHead(nn.Module):
    """mu and log σ² straight from h, as in the seed (``fc_mu``, ``fc_logvar``)."""

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.fc_mu = nn.Linear(feature_dim, latent_dim)
        self.fc_logvar = nn.Linear(feature_dim, latent_dim)

    def moments(self, h: Tensor) -> tuple[Tensor, Tensor]:
        logvar = self.fc_logvar(h).float().clamp(LOGVAR_MIN, LOGVAR_MAX)
        return self.fc_mu(h).float(), logvar

    def forward(self, h: Tensor) -> Posterior:
        return DiagonalPosterior(*self.moments(h))


class _FactorBranch(nn.Module):
    """h (B, F) → ``num_outputs`` extra covariance parameters through a small bottleneck.

    At 256×256 inputs F = 256·16·16 = 65 536; a direct Linear(F, d(d−1)/2) would hold
    65 536 · 32 640 ≈ 2.1 billion weights at d = 256. Linear(F → 128) → ReLU → Linear(128 → n)
    keeps it at ~8.4 M + 128·n, and correlations between latent dimensions are a low-dimensional
    function of the input anyway. The last layer starts at zero, so at initialisation the
    covariance is exactly the diagonal one (a stable, well-understood start for any d) and the
    off-diagonal terms grow only as the gradient asks for them.
    """

    def __init__(self, feature_dim: int, num_outputs: int) -> None:
        super().__init__()
        self.bottleneck = nn.Sequential(nn.Linear(feature_dim, FACTOR_BOTTLENECK), nn.ReLU())
        self.out = nn.Linear(FACTOR_BOTTLENECK, num_outputs)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.out(self.bottleneck(h)).float()


class FullHead(PosteriorHead):
    """L = diag(exp(½ log σ²)) + strictly-lower part from d(d−1)/2 outputs.

    exp() keeps the Cholesky diagonal strictly positive, and with the off-diagonal part at zero
    this posterior is exactly the diagonal one (so "full" nests "diagonal").
    """

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__(feature_dim, latent_dim)
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        # latent_dim 1 has no off-diagonal entries (and then is the diagonal posterior).
        self.off_diagonal = _FactorBranch(feature_dim, rows.numel()) if rows.numel() else None

    def forward(self, h: Tensor) -> Posterior:
        mu, logvar = self.moments(h)
        scale_tril = torch.diag_embed(torch.exp(0.5 * logvar))  # (B, d, d)
        if self.off_diagonal is not None:
            scale_tril = scale_tril.index_put(
                (torch.arange(len(h), device=h.device)[:, None], self._rows, self._cols),
                self.off_diagonal(h))
        return FullPosterior(mu, scale_tril)


class LowRankHead(PosteriorHead):
    """D = exp(log σ²) and U (d × rank) from d·rank outputs: Σ = D + U Uᵀ."""

    def __init__(self, feature_dim: int, latent_dim: int, rank: int) -> None:
        super().__init__(feature_dim, latent_dim)
        self.rank = rank
        self.factor = _FactorBranch(feature_dim, latent_dim * rank)

    def forward(self, h: Tensor) -> Posterior:
        mu, logvar = self.moments(h)
        factor = self.factor(h).view(len(h), self.latent_dim, self.rank)  # (B, d, r)
        return LowRankPosterior(mu, logvar.exp(), factor)


def build_head(model_config: ModelConfig, feature_dim: int) -> PosteriorHead:
    """The head for ``model_config.covariance`` (``diagonal``, ``full`` or ``lowrank``)."""
    d = model_config.latent_dim
    if model_config.covariance == "diagonal":
        return PosteriorHead(feature_dim, d)
    if model_config.covariance == "full":
        return FullHead(feature_dim, d)
    if model_config.covariance == "lowrank":
        return LowRankHead(feature_dim, d, model_config.rank)
    raise ValueError(f"unknown covariance {model_config.covariance!r}; "
                     f"choose one of {list(COVARIANCES)}")
