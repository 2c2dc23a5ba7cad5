"""Typed, frozen configuration for one VAE training run, validated in one place.

Every knob a trial can vary lives here with its default. The search space fills the same
dotted keys (``model.latent_dim``, ``loss.fft_weight``, ``train.learning_rate``); merging a
flat mapping into the defaults fails on any key that is not a field, before a trial starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

ACTIVATIONS = ("sigmoid", "tanh", "relu", "none")
COVARIANCES = ("diagonal", "full", "lowrank")
# "transposed": the seed's two stride-4 transposed convs (kernel 4 = stride 4, so every output
# pixel of a 4x4 block has its own weight: the checkerboard grid of the seed's reconstructions).
# "resize": four stages of 2x nearest upsampling + 3x3 conv (Odena et al. 2016, "Deconvolution
# and Checkerboard Artifacts"), which can draw fine weave without a periodic grid.
DECODERS = ("transposed", "resize")
FLIPS = ("none", "horizontal", "both")
MAX_RESIZE = 4096  # largest side an image may be resized to (data.resize, model.input_resize)
# Pixel range the model sees; it follows the output activation so that a reconstruction can
# reach every input value (tanh cannot produce 0..1 only, sigmoid cannot produce -1).
INPUT_RANGES = {"sigmoid": "unit", "relu": "unit", "none": "unit", "tanh": "symmetric"}


class ConfigError(ValueError):
    """An invalid configuration value or key; the message names it and what is allowed."""


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {list(choices)}")


def _check_range(name: str, value: float, low: float, high: float, *, open_low: bool = False,
                 open_high: bool = False) -> None:
    lo, hi = "(" if open_low else "[", ")" if open_high else "]"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} is invalid; allowed: a number in {lo}{low}, "
                          f"{high}{hi}")
    ok_low = value > low if open_low else value >= low
    ok_high = value < high if open_high else value <= high
    if not (ok_low and ok_high):
        raise ConfigError(f"{name}={value!r} is out of range; allowed {lo}{low}, {high}{hi}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name}={value!r} is invalid; allowed: an integer {allowed}")


def check_image_size(name: str, value: object) -> None:
    """The model's input side (model.image_size, tune's --image-size): the encoder halves it
    four times."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 32 or value % 16:
        raise ConfigError(f"{name}={value!r} is invalid; allowed: a multiple of 16 that is "
                          ">= 32 (the encoder halves it 4 times)")


def check_resize(name: str, value: object, patch_size: int) -> None:
    """The resize rule (data.resize, model.input_resize, score's --resize): 0 or >= a patch."""
    if isinstance(value, bool) or not isinstance(value, int) or (
            value != 0 and not patch_size <= value <= MAX_RESIZE):
        raise ConfigError(f"{name}={value!r} is invalid; allowed: 0 (native resolution) or an "
                          f"integer in [{patch_size}, {MAX_RESIZE}] (at least one "
                          f"{patch_size}x{patch_size} patch)")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the AitexVAE: encoder 4× stride-2 convs, posterior head, decoder."""

    image_size: int = 256
    in_channels: int = 1
    latent_dim: int = 32
    dropout: float = 0.1
    output_activation: str = "sigmoid"
    covariance: str = "diagonal"
    rank: int = 1  # rank of U in Σ = D + UUᵀ; only used when covariance == "lowrank"
    decoder: str = "transposed"  # see DECODERS; the default is the seed's (old models load)
    decoder_width: int = 16  # channels of the resize decoder's last two stages (x2, x4 before)
    # 0: one latent code for the whole patch (the seed). t > 0: the patch is cut into (S/t)²
    # non-overlapping t×t tiles, each encoded to its own latent and decoded back in place (the
    # sliding-window VAE/AE of MVTec AD's texture baselines, Bergmann et al. 2019). A small tile
    # of weave is far simpler than a 256² patch, so a small latent can reconstruct it; on real
    # AITEX (dev split) 64-px tiles beat whole-patch models at a third of the epoch time.
    # A tile at least as large as the image is the whole image (so one search space serves
    # 64-px synthetic and 256-px real patches).
    tile_size: int = 0
    # The data's ``resize`` (vae.data.config.DataConfig.resize), kept with the model like
    # image_size and in_channels: an image is resized to input_resize² before it is cut into
    # image_size² patches (0: native resolution), so `aitexvae score` and the pyfunc prepare
    # new images exactly as the trial's data was prepared.
    input_resize: int = 0

    def __post_init__(self) -> None:
        check_image_size("model.image_size", self.image_size)
        if isinstance(self.in_channels, bool) or not isinstance(self.in_channels, int) \
                or self.in_channels not in (1, 3):
            raise ConfigError(f"model.in_channels={self.in_channels!r} is invalid; allowed: 1 or 3")
        _check_int("model.latent_dim", self.latent_dim, 1, 1024)
        _check_range("model.dropout", self.dropout, 0.0, 1.0, open_high=True)
        _check_choice("model.output_activation", self.output_activation, ACTIVATIONS)
        _check_choice("model.covariance", self.covariance, COVARIANCES)
        _check_int("model.rank", self.rank, 1)
        _check_choice("model.decoder", self.decoder, DECODERS)
        _check_int("model.decoder_width", self.decoder_width, 4, 256)
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) \
                or (self.tile_size != 0 and (self.tile_size < 32 or self.tile_size % 16 or (
                    self.tile_size < self.image_size and self.image_size % self.tile_size))):
            raise ConfigError(f"model.tile_size={self.tile_size!r} is invalid; allowed: 0 (the "
                              "whole patch) or a multiple of 16 that is >= 32 and divides "
                              f"model.image_size={self.image_size} (or is >= it: one tile)")
        check_resize("model.input_resize", self.input_resize, self.image_size)
        if self.covariance == "lowrank" and self.rank >= self.latent_dim:
            raise ConfigError(f"model.rank={self.rank} must be < model.latent_dim="
                              f"{self.latent_dim} for a low-rank covariance (use covariance="
                              "'full' for a full-rank one)")

    @property
    def network_size(self) -> int:
        """The size the encoder and decoder work at: the tile, or the whole image."""
        return min(self.tile_size, self.image_size) if self.tile_size else self.image_size

    @property
    def tiles_per_image(self) -> int:
        return (self.image_size // self.network_size) ** 2

    @property
    def input_range(self) -> str:
        """``unit`` ([0, 1]) or ``symmetric`` ([-1, 1]): how uint8 pixels are scaled."""
        return INPUT_RANGES[self.output_activation]


@dataclass(frozen=True)
class LossConfig:
    """Weights of the reconstruction terms (summed over pixels) and of the KL term (beta)."""

    mse_weight: float = 0.0
    bce_weight: float = 1.0
    fft_weight: float = 0.0
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("mse_weight", "bce_weight", "fft_weight", "kl_weight"):
            _check_range(f"loss.{name}", getattr(self, name), 0.0, 1e6)
        if self.mse_weight + self.bce_weight + self.fft_weight == 0:
            raise ConfigError("loss.mse_weight, loss.bce_weight and loss.fft_weight are all 0; "
                              "at least one reconstruction weight must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one trial."""

    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    num_epochs: int = 10
    grad_clip_norm: float = 10.0  # on the per-sample (batch-mean) loss; 0 disables clipping
    seed: int = 0
    # "auto": bf16 autocast on CUDA and on CPUs where it measured faster; "off"/"bf16" force it.
    precision: str = "auto"
    # Denoising: the share of training patches that get a synthetic defect (vae.data.corruption)
    # while the loss compares the reconstruction with the clean patch. 0 = a plain VAE.
    denoise_probability: float = 0.0
    flip: str = "none"  # random label-preserving flips of training patches: see FLIPS

    def __post_init__(self) -> None:
        _check_range("train.learning_rate", self.learning_rate, 0.0, 1.0, open_low=True)
        _check_range("train.weight_decay", self.weight_decay, 0.0, 1.0)
        _check_int("train.batch_size", self.batch_size, 1, 4096)
        _check_int("train.num_epochs", self.num_epochs, 1)
        _check_range("train.grad_clip_norm", self.grad_clip_norm, 0.0, 1e9)
        _check_int("train.seed", self.seed, 0)
        _check_choice("train.precision", self.precision, ("auto", "off", "bf16"))
        _check_range("train.denoise_probability", self.denoise_probability, 0.0, 1.0)
        _check_choice("train.flip", self.flip, FLIPS)


# Per-pixel maps from an input x and its reconstruction x̂ (vae/score/maps.py):
#   l2, l1          (x - x̂)², |x - x̂|
#   l2_smooth       G_σ * (x - x̂)²: blurred squared residual
#   signed_smooth   |G_σ * (x - x̂)|: the residual blurred *before* its magnitude is taken. A
#                   reconstruction's error on normal weave is a zero-mean high-frequency pattern
#                   that cancels under the blur, a defect is a local shift of the mean that does
#                   not; on real AITEX (dev split, blur "reconstruction") this moved the
#                   fabric-matched AUROC from 0.77 (l2_smooth, max) to 0.83.
#   ssim            1 - SSIM(x, x̂), Gaussian window σ = 1.5 (Wang et al. 2004)
#   msgms           1 - multi-scale gradient-magnitude similarity, 4 scales (Zavrtanik et al.,
#                   RIAD 2021 / DRAEM 2021): structure, not brightness
MAP_METHODS = ("l2", "l1", "l2_smooth", "signed_smooth", "ssim", "msgms")
REDUCTIONS = ("max", "topk_mean", "mean")
# "image": each map is standardised by its own mean and standard deviation before reduction,
# so a patch scores how far its worst spot stands out of the rest of the same patch (fabrics
# whose normal residual is large no longer outrank defects on quiet fabrics).
NORMALIZATIONS = ("none", "image")
# "fixed": score exactly as configured. "best": every validation pass compares the built-in
# scorer set (vae.score.scorers.NAMES) on the same reconstructions and the trial keeps the
# best one in its checkpoint's config (score.* then describes the winner). "best_per_patch":
# the same without the strip reference, whose nearest-window search per strip is the one
# costly candidate on a CPU (README: "Scores and metrics").
SCORE_SELECTIONS = ("fixed", "best", "best_per_patch")
# "none": each patch is scored on its own, by the fields above. "strip", "strip_peak" and
# "strip_fabric": each patch's signed residual is compared with the other patches of its strip
# (vae.score.reference, fixed window and basis; they differ in how the distances become a
# score: smoothed max (format 4), or the unsmoothed max above the patch's median, leaving out
# the background found from each patch's border (format 5) or along the whole strip (format 6,
# which "best" compares)): map, smooth_sigma, reduction, topk_fraction and normalize are then
# unused, and scores need the strip, so a lone patch cannot be scored.
REFERENCES = ("none", "strip", "strip_peak", "strip_fabric")


@dataclass(frozen=True)
class ScoreConfig:
    """How an anomaly map and a patch score are made from a reconstruction.

    Part of the trial config so that a pulled model scores exactly as its trial did.
    """

    map: str = "l2_smooth"  # see MAP_METHODS
    smooth_sigma: float = 2.0  # Gaussian sigma (px) of l2_smooth, signed_smooth, ssim, msgms
    reduction: str = "topk_mean"  # map → patch score
    # Share of pixels averaged by "topk_mean". The median AITEX defect covers ~0.01 % of a
    # 4096×256 strip (~100 px, ~0.15 % of a 256² patch): averaging the top 1 % (655 px) would
    # dilute it ~6×, while 0.1 % (65 px) keeps it and is still steadier than the single max.
    topk_fraction: float = 0.001
    normalize: str = "none"  # see NORMALIZATIONS
    select: str = "fixed"  # see SCORE_SELECTIONS
    reference: str = "none"  # see REFERENCES

    def __post_init__(self) -> None:
        _check_choice("score.map", self.map, MAP_METHODS)
        _check_range("score.smooth_sigma", self.smooth_sigma, 0.0, 64.0)
        _check_choice("score.reduction", self.reduction, REDUCTIONS)
        _check_range("score.topk_fraction", self.topk_fraction, 0.0, 1.0, open_low=True)
        _check_choice("score.normalize", self.normalize, NORMALIZATIONS)
        _check_choice("score.select", self.select, SCORE_SELECTIONS)
        _check_choice("score.reference", self.reference, REFERENCES)


T = TypeVar("T")


def _section_from_dict(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix} must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {[f'{prefix}.{k}' for k in unknown]}; valid keys: "
                          f"{[f'{prefix}.{n}' for n in names]}")
    return cls(**data)


@dataclass(frozen=True)
class VAEConfig:
    """The resolved configuration of one trial; stored beside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)

    SECTIONS = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig,
                "score": ScoreConfig}

    def __post_init__(self) -> None:
        activation = self.model.output_activation
        if self.loss.bce_weight > 0 and activation in ("tanh", "relu"):
            raise ConfigError(
                f"loss.bce_weight={self.loss.bce_weight} needs outputs in (0, 1), but "
                f"model.output_activation={activation!r} does not give them; use 'sigmoid' "
                "(probabilities) or 'none' (logits), or set loss.bce_weight=0")

    @property
    def recon_is_logits(self) -> bool:
        """With activation ``none`` and a BCE term the decoder output is a logit.

        The image-space reconstruction is then sigmoid(output): BCE uses the numerically
        stable ``binary_cross_entropy_with_logits`` and MSE/FFT compare sigmoid(output) with x,
        so all terms agree on what the reconstruction is.
        """
        return self.model.output_activation == "none" and self.loss.bce_weight > 0

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in self.SECTIONS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VAEConfig:
        """Strict: unknown sections or keys raise ``ConfigError`` naming the valid ones."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; valid: {list(cls.SECTIONS)}")
        return cls(**{name: _section_from_dict(section, data.get(name, {}), name)
                      for name, section in cls.SECTIONS.items()})

    def flat(self) -> dict[str, Any]:
        """``{"model.latent_dim": 32, ...}``: the form used by search spaces and MLflow params."""
        return {f"{section}.{key}": value
                for section, values in self.to_dict().items() for key, value in values.items()}

    def with_overrides(self, overrides: Mapping[str, Any]) -> VAEConfig:
        """Merge dotted keys (``{"model.latent_dim": 64}``) into this config, strictly."""
        return self.from_dict(unflatten(overrides, base=self.to_dict()))

    @classmethod
    def valid_keys(cls) -> list[str]:
        return [f"{name}.{f.name}" for name, section in cls.SECTIONS.items()
                for f in dataclasses.fields(section)]


def unflatten(flat: Mapping[str, Any], base: Mapping[str, Mapping[str, Any]] | None = None
              ) -> dict[str, dict[str, Any]]:
    """``{"a.b": 1}`` → ``{"a": {"b": 1}}`` on top of ``base``; rejects keys that are not fields."""
    valid = set(VAEConfig.valid_keys())
    nested = {section: dict(values) for section, values in (base or {}).items()}
    for key, value in flat.items():
        if key not in valid:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {sorted(valid)}")
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    return nested
