"""Per-pixel anomaly maps from reconstruction residuals, and per-patch scores from the maps.

A VAE trained on normal fabric reconstructs normal texture well and defects poorly, so the
residual |x - x̂| (or its square) is large on defects (An & Cho 2015, "Variational autoencoder
based anomaly detection using reconstruction probability"; Bergmann et al. 2019, "MVTec AD",
§4.2 "the per-pixel ℓ2 distance of the input and its reconstruction"). The reconstruction
decodes the posterior mean (``model.reconstruct``), so scores are deterministic. A Gaussian
blur of the squared residual suppresses single-pixel reconstruction noise of fine weaves, as
the anomaly maps of PaDiM (Defard et al. 2021) and PatchCore (Roth et al. 2022) are blurred
before they are thresholded. Maps are compared in [0, 1] pixel units whatever range the model
sees, and averaged over channels, so ``l2`` maps of different models share a scale.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vae.config import ScoreConfig
from vae.pixels import to_model_input, to_unit
from vae.posterior import Posterior
from vae.score.blur import gaussian_blur
from vae.score.similarity import msgms_map, ssim_map

NORMALIZE_EPS = 1e-6  # a flat map (std 0) normalises to zeros, not NaN


def residual_maps(x_unit: torch.Tensor, recon_unit: torch.Tensor, score_config: ScoreConfig
                  ) -> torch.Tensor:
    """(B, C, H, W) input and reconstruction in [0, 1] → (B, H, W) float32 anomaly maps.

    ``score_config.map`` chooses the map (see ``vae.config.MAP_METHODS``), ``normalize`` whether
    each map is standardised by its own statistics.
    """
    method = score_config.map
    x, recon = x_unit.float(), recon_unit.float()
    if method in ("ssim", "msgms", "signed_smooth"):
        # Channel average first (gray stays a view): these maps compare structure or the mean.
        x = x[:, 0] if x.shape[1] == 1 else x.mean(dim=1)
        recon = recon[:, 0] if recon.shape[1] == 1 else recon.mean(dim=1)
        if method == "signed_smooth":
            maps = gaussian_blur(x - recon, score_config.smooth_sigma).abs_()
        else:
            similarity = ssim_map(x, recon) if method == "ssim" else msgms_map(x, recon)
            maps = gaussian_blur(1.0 - similarity, score_config.smooth_sigma)
    else:
        residual = torch.sub(x, recon)  # one new buffer, then in place
        residual = residual.abs_() if method == "l1" else residual.square_()
        # Channel average keeps RGB and gray maps on one scale; for gray it is a view, no copy.
        maps = residual[:, 0] if residual.shape[1] == 1 else residual.mean(dim=1)
        if method == "l2_smooth":
            maps = gaussian_blur(maps, score_config.smooth_sigma)
    if score_config.normalize == "image":
        flat = maps.flatten(1)  # (B, H*W)
        std, mean = torch.std_mean(flat, dim=1)
        maps = (maps - mean[:, None, None]) / (std[:, None, None] + NORMALIZE_EPS)
    return maps


def reduce_maps(maps: torch.Tensor, score_config: ScoreConfig) -> torch.Tensor:
    """(B, H, W) maps → (B,) patch scores: max, mean, or mean of the top ``topk_fraction`` pixels."""
    flat = maps.flatten(1)  # (B, H*W)
    if score_config.reduction == "max":
        return flat.amax(dim=1)
    if score_config.reduction == "mean":
        return flat.mean(dim=1)
    k = max(1, math.ceil(score_config.topk_fraction * flat.shape[1]))
    return flat.topk(k, dim=1, sorted=False).values.mean(dim=1)


def patch_scores(maps: np.ndarray, score_config: ScoreConfig) -> np.ndarray:
    """(N, H, W) anomaly maps → (N,) float32 patch scores (see ``reduce_maps``)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {maps.shape}")
    return reduce_maps(torch.from_numpy(maps), score_config).numpy()


def _as_nchw(images_uint8: np.ndarray | torch.Tensor, in_channels: int) -> torch.Tensor:
    images = torch.as_tensor(images_uint8)
    if images.ndim == 3:  # (N, H, W) gray patches: add the channel axis
        images = images.unsqueeze(1)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W) or (N, H, W), got "
                         f"{tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 pixels (0..255), got {images.dtype}")
    if images.shape[1] != in_channels:
        raise ValueError(f"images have {images.shape[1]} channel(s) but the model was trained on "
                         f"{in_channels}; allowed: {in_channels}")
    return images


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def scoring_precision(device: torch.device) -> Iterator[None]:
    """Scores in one precision on every device: fp32, autocast off, and no TF32 on CUDA.

    Trials train in bf16 where the hardware has it, but a threshold calibrated on a trial's
    scores must meet the same numbers when a pulled model scores elsewhere; bf16 (or TF32)
    reconstructions differ from fp32 ones by ~1e-3 relative, enough to flip decisions near the
    threshold. In fp32 a pulled model on a CPU reproduces a CPU trial's scores bit for bit and
    a GPU trial's to ~1e-6 relative (kernels sum in different orders). Validation,
    calibration, ``aitexvae score`` and the pyfunc all score in here. The settings are
    process-wide while a pass runs: score from one thread at a time.
    """
    with torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        # The public matmul setting and cuDNN's one flag, each restored as it was (the cuDNN
        # context manager would also reset its benchmark limit and other settings).
        matmul, cudnn_tf32 = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        try:
            torch.set_float32_matmul_precision("highest")
            torch.backends.cudnn.allow_tf32 = False
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = cudnn_tf32
            torch.set_float32_matmul_precision(matmul)


@contextlib.contextmanager
def scoring_layout(model: nn.Module) -> Iterator[nn.Module]:
    """The model in channels_last, the layout every score is computed in (a trial, ``aitexvae
    score``, the pyfunc): measured ~1.6x faster than the contiguous layout ``vae.load`` gives on
    this project's CPUs, and one layout everywhere keeps the kernels, hence the scores, the same
    (the two layouts differ by ~1e-5 relative). A contiguous model is given back contiguous;
    one already in channels_last (a trial's, or inside a longer ``scoring_layout``) is not
    converted at all, so a long run converts once, not per batch of patches."""
    contiguous = all(p.is_contiguous() for p in model.parameters() if p.dim() == 4)
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if contiguous:
            model.to(memory_format=torch.contiguous_format)


@dataclass(frozen=True)
class Pass:
    """One deterministic forward pass over a batch: what scores and validation losses need."""

    x: torch.Tensor  # (B, C, H, W) float32 model input, in the model's input range
    recon: torch.Tensor  # (B, C, H, W) float32 reconstruction of the posterior mean, same range
    logits: torch.Tensor | None  # pre-sigmoid output of a logits model, else None
    posterior: Posterior

    def unit(self, input_range: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, x̂) in [0, 1]: the scale maps compare in."""
        return to_unit(self.x, input_range), to_unit(self.recon, input_range)


def iter_passes(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, *,
                batch_size: int = 64, device: str | torch.device | None = None
                ) -> Iterator[Pass]:
    """One encode and one decode (of the posterior mean) per patch, in input order, in fp32.

    The model is put in eval mode (dropout off) for the pass and returned to its previous mode.
    ``device=None`` uses the model's own device; a given device moves the model there.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an integer >= 1")
    config = model.config
    images = _as_nchw(images_uint8, config.model.in_channels)
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        with scoring_layout(model), torch.inference_mode(), scoring_precision(device):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start:start + batch_size].to(device, non_blocking=True)
                x = to_model_input(batch, config.model.input_range)  # uint8 crosses the bus
                x = x.contiguous(memory_format=torch.channels_last)
                posterior = model.encode(x)
                recon, logits = model.decode(posterior.mean)
                yield Pass(x, recon.float(), logits, posterior)
    finally:
        model.train(was_training)


def iter_reconstructions(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, *,
                         batch_size: int = 64, device: str | torch.device | None = None
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, x̂)`` float32 batches (B, C, H, W) in [0, 1] on ``device``, in input order
    (see ``iter_passes``)."""
    input_range = model.config.model.input_range
    for batch in iter_passes(model, images_uint8, batch_size=batch_size, device=device):
        yield batch.unit(input_range)


def iter_map_batches(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, *,
                     score_config: ScoreConfig | None = None, batch_size: int = 64,
                     device: str | torch.device | None = None) -> Iterator[torch.Tensor]:
    """Yield (B, H, W) float32 maps on ``device``, batch by batch, in input order."""
    score_config = score_config or model.config.score
    for x_unit, recon_unit in iter_reconstructions(model, images_uint8, batch_size=batch_size,
                                                   device=device):
        yield residual_maps(x_unit, recon_unit, score_config)


def anomaly_maps(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, *,
                 score_config: ScoreConfig | None = None, batch_size: int = 64,
                 device: str | torch.device | None = None) -> np.ndarray:
    """(N, C, H, W) uint8 patches → (N, H, W) float32 anomaly maps (``model.config.score`` by default)."""
    return score_patches(model, images_uint8, score_config=score_config, batch_size=batch_size,
                         device=device)[1]


def score_patches(model: nn.Module, images_uint8: np.ndarray | torch.Tensor, *,
                  score_config: ScoreConfig | None = None, batch_size: int = 64,
                  device: str | torch.device | None = None, keep_maps: bool = True
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Patch scores (N,) float32 and maps (N, H, W) float32 (``None`` with ``keep_maps=False``).

    Scores are reduced on the device, batch by batch; ``keep_maps=False`` skips copying maps to
    host memory (what a trial's ``val/auroc`` needs).
    """
    score_config = score_config or model.config.score
    if score_config.reference != "none":
        raise ValueError(f"score.reference={score_config.reference!r} scores a patch against the "
                         "other patches of its strip, not on its own; score whole strips "
                         "(vae.score.reference.strip_scores, aitexvae score), or pass a "
                         "score_config with reference='none'")
    images = _as_nchw(images_uint8, model.config.model.in_channels)
    # Maps go straight into one preallocated host array (no list + concatenate: half the
    # memory traffic); scores stay on the device until the end (no per-batch sync on a GPU).
    maps = np.empty((images.shape[0], *images.shape[2:]), np.float32) if keep_maps else None
    scores, start, in_flight = [], 0, None
    for batch_maps in iter_map_batches(model, images, score_config=score_config,
                                       batch_size=batch_size, device=device):
        scores.append(reduce_maps(batch_maps, score_config))
        if maps is not None and batch_maps.is_cuda:
            # Copy to pinned memory without waiting, and file the previous batch meanwhile:
            # the device-to-host copy overlaps the host work instead of stalling the GPU.
            staged = _stage(batch_maps, start)
            if in_flight is not None:
                _file(maps, *in_flight)
            in_flight = staged
        elif maps is not None:
            torch.from_numpy(maps[start:start + len(batch_maps)]).copy_(batch_maps)
        start += len(batch_maps)
    if in_flight is not None:
        _file(maps, *in_flight)
    score_array = torch.cat(scores).float().cpu().numpy() if scores \
        else np.zeros(0, np.float32)
    return score_array, maps


def _stage(batch_maps: torch.Tensor, start: int
           ) -> tuple[torch.Tensor, int, torch.cuda.Event]:
    host = torch.empty(batch_maps.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(batch_maps, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, start, done


def _file(maps: np.ndarray, host: torch.Tensor, start: int, done: torch.cuda.Event) -> None:
    done.synchronize()
    maps[start:start + len(host)] = host.numpy()
