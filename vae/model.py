"""AitexVAE: the seed's convolutional VAE (shared/seeds/vae-concepts.md), generalised.

Encoder: 4 stride-2 3×3 convs (C → 32 → 64 → 128 → 256), each followed by ReLU and Dropout2d,
flattened to ``feature_dim = 256 · (t/16)²`` (t = the tile size, or S without tiling); a posterior head (diagonal / full / low-rank)
gives q(z|x). Decoder: ``fc_dec`` to 64 × (S/16)², then either the seed's two stride-4 4×4
transposed convs (``model.decoder="transposed"``) or four resize-conv stages (2× nearest
upsampling + 3×3 conv + ReLU, ``"resize"``) back to S × S, then the output activation.
Kingma & Welling 2014 ("Auto-Encoding Variational Bayes").
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


def _resize_stages(width: int, out_channels: int) -> list[nn.Module]:
    """(S/16)² → S²: four stages of 2× nearest upsampling + 3×3 conv + ReLU, then a 3×3 conv.

    Widths 4w, 2w, w, w (w = ``model.decoder_width``): the full-resolution stages dominate the
    cost (each 3×3 conv there costs 9·w² MACs per pixel), so they stay narrow.
    Each output pixel sees a 3×3 neighbourhood through the same weights, so no phase of a
    stride is privileged and flat fabric decodes flat (the transposed stride-4 decoder cannot).
    """
    layers: list[nn.Module] = []
    previous = DECODER_CHANNELS
    for factor in (4, 2, 1, 1):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(previous, width * factor, kernel_size=3, padding=1), nn.ReLU()]
        previous = width * factor
    return [*layers, nn.Conv2d(previous, out_channels, kernel_size=3, padding=1)]


class AitexVAE(nn.Module):
    def __init__(self, model_config: ModelConfig, recon_is_logits: bool = False) -> None:
        super().__init__()
        if recon_is_logits and model_config.output_activation != "none":
            raise ValueError("recon_is_logits=True needs model.output_activation='none' (the "
                             f"decoder must output raw logits), got "
                             f"{model_config.output_activation!r}")
        self.model_config = model_config
        self.recon_is_logits = recon_is_logits
        size, channels = model_config.network_size, model_config.in_channels
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
        unflatten = nn.Unflatten(1, (DECODER_CHANNELS, self.feature_map_size,
                                     self.feature_map_size))
        if model_config.decoder == "resize":
            self.decoder = nn.Sequential(unflatten, *_resize_stages(model_config.decoder_width,
                                                                    channels))
        else:
            self.decoder = nn.Sequential(
                unflatten,
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
        h = self.encoder(self._tiles(x))  # (B·T, 256 · (t/16)²), T tiles of t² per image
        return self.head(h)  # a posterior per tile: batch B·T

    def _tiles(self, x: Tensor) -> Tensor:
        """(B, C, S, S) → (B·T, C, t, t), row-major tiles; the identity without tiling."""
        t, n = self.model_config.network_size, self.model_config.image_size \
            // self.model_config.network_size
        if n == 1:
            return x
        b, c = x.shape[:2]
        tiles = x.reshape(b, c, n, t, n, t).permute(0, 2, 4, 1, 3, 5)  # (B, n, n, C, t, t)
        return tiles.reshape(b * n * n, c, t, t)

    def _untile(self, tiles: Tensor) -> Tensor:
        """The inverse of ``_tiles``."""
        t, n = self.model_config.network_size, self.model_config.image_size \
            // self.model_config.network_size
        if n == 1:
            return tiles
        c = tiles.shape[1]
        grid = tiles.reshape(-1, n, n, c, t, t).permute(0, 3, 1, 4, 2, 5)  # (B, C, n, t, n, t)
        return grid.reshape(-1, c, n * t, n * t)

    @staticmethod
    def reparameterize(posterior: Posterior, generator: torch.Generator | None = None) -> Tensor:
        return posterior.rsample(generator)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor | None]:
        """z (B·T, d) → (recon (B, C, S, S) in the input range, logits or None); T = 1 without
        tiling, else the tiles of each image in row-major order."""
        # The last layer's output is taken to fp32 before the activation: under bf16 autocast a
        # bf16 sigmoid resolves only ~0.004 near 1, too coarse for BCE on bright pixels.
        out = self._untile(self.decoder(self.fc_dec(z)).float())  # (B, C, S, S)
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
