"""AitexVAE: the seed's convolutional VAE (shared/seeds/vae-concepts.md), generalised.

Encoder: 4 stride-2 3×3 convs (C → 32 → 64 → 128 → 256), each followed by ReLU and Dropout2d,
flattened to ``feature_dim = 256 · (S/16)²``; a posterior head (diagonal / full / low-rank)
gives q(z|x). Decoder: ``fc_dec`` to 64 × (S/16)², two stride-4 4×4 transposed convs back to
S × S, then the output activation. Kingma & Welling 2014 ("Auto-Encoding Variational Bayes").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae.config import ACTIVATIONS, ModelConfig, VAEConfig
from vae.posterior import Posterior, build_head

ENCODER_CHANNELS = (32, 64, 128, 256)
DECODER_CHANNELS = 64  # channels of the (S/16)² map that fc_dec produces


@dataclass
class VAEOutput:
    recon: Tensor  # (B, C, S, S) in the model's input range (image space)
    logits: Tensor | None  # pre-sigmoid output when the model predicts logits, else None
    posterior: Posterior
    z: Tensor  # (B, d) the sample that was decoded


def _activation(name: str) -> nn.Module:
    modules = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "none": nn.Identity}
    if name not in modules:
        raise ValueError(f"unknown output activation {name!r}; choose one of {list(ACTIVATIONS)}")
    return modules[name]()


class AitexVAE(nn.Module):
    def __init__(self, model_config: ModelConfig, recon_is_logits: bool = False) -> None:
        super().__init__()
        if recon_is_logits and model_config.output_activation != "none":
            raise ValueError("recon_is_logits=True needs model.output_activation='none' (the "
                             f"decoder must output raw logits), got "
                             f"{model_config.output_activation!r}")
        self.model_config = model_config
        self.recon_is_logits = recon_is_logits
        size, channels = model_config.image_size, model_config.in_channels
        self.feature_map_size = size // 16
        self.feature_dim = ENCODER_CHANNELS[-1] * self.feature_map_size**2

        layers: list[nn.Module] = []
        previous = channels
        for width in ENCODER_CHANNELS:
            layers += [nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1),
                       nn.ReLU(), nn.Dropout2d(model_config.dropout)]
            previous = width
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.head = build_head(model_config, self.feature_dim)

        self.fc_dec = nn.Linear(model_config.latent_dim, DECODER_CHANNELS * self.feature_map_size**2)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (DECODER_CHANNELS, self.feature_map_size, self.feature_map_size)),
            nn.ConvTranspose2d(DECODER_CHANNELS, 32, kernel_size=4, stride=4),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, kernel_size=4, stride=4),
        )
        self.output_activation = _activation(model_config.output_activation)

    # -- the four steps of the seed ----------------------------------------------------------
    def encode(self, x: Tensor) -> Posterior:
        """x (B, C, S, S) in the input range → q(z|x)."""
        expected = (self.model_config.in_channels, self.model_config.image_size,
                    self.model_config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        h = self.encoder(x)  # (B, 256 · (S/16)²)
        return self.head(h)

    @staticmethod
    def reparameterize(posterior: Posterior, generator: torch.Generator | None = None) -> Tensor:
        return posterior.rsample(generator)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """z (B, d) → (recon in the input range, logits or None)."""
        # The last layer's output is taken to fp32 before the activation: under bf16 autocast a
        # bf16 sigmoid resolves only ~0.004 near 1, too coarse for BCE on bright pixels.
        out = self.decoder(self.fc_dec(z)).float()  # (B, C, S, S)
        if self.recon_is_logits:
            return torch.sigmoid(out), out
        return self.output_activation(out), None

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        posterior = self.encode(x)
        z = self.reparameterize(posterior, generator)
        recon, logits = self.decode(z)
        return VAEOutput(recon=recon, logits=logits, posterior=posterior, z=z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean: deterministic in eval mode; image space, input range."""
        return self.decode(self.encode(x).mean)[0]


def build_model(config: VAEConfig) -> AitexVAE:
    """The model for a resolved config; ``model.config`` keeps that config for save and scoring."""
    model = AitexVAE(config.model, recon_is_logits=config.recon_is_logits)
    model.config = config
    return model
