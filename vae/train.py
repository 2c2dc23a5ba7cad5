"""One epoch of training and one evaluation pass, pure PyTorch, returning plain floats.

The caller (the Tune trainable, a test, a notebook) owns the loop over epochs, checkpoints and
reporting. Speed on this project's CPUs and GPUs comes from channels_last, bf16 autocast where
the hardware computes bf16 natively, fused Adam (bench/train_step.py measures them), the uint8
patches placed on the device once (``place_images``) and one host synchronisation per epoch.
Validation (losses and scores from one forward pass) is ``vae.validation``'s.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

from vae import keys
from vae.config import TrainConfig, VAEConfig
from vae.data.corruption import TRAIN_DEFECT_STREAM, corrupt, flip
from vae.losses import LOSS_TERMS, vae_loss
from vae.pixels import to_model_input

log = logging.getLogger(__name__)

TRAIN_KEYS = {"loss": keys.TRAIN_LOSS, "mse": keys.TRAIN_MSE, "bce": keys.TRAIN_BCE,
              "fft": keys.TRAIN_FFT, "kl": keys.TRAIN_KL}


class NonFiniteLossError(RuntimeError):
    """A loss term or the gradient norm became NaN/inf; the weights were not updated."""

    def __init__(self, term: str, value: float, epoch: int, step: int) -> None:
        super().__init__(f"non-finite {term}={value} at epoch {epoch}, step {step}; the weights "
                         "were not updated (lower train.learning_rate or the loss weights, or "
                         "set train.grad_clip_norm)")
        self.term, self.value, self.epoch, self.step = term, value, epoch, step


def select_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: there bf16 convolutions measured ~2× faster than fp32 (bench/)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    caps = get() if get is not None else {}
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on ``device`` (None: plain fp32)."""
    if precision not in ("auto", "off", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose one of ['auto', 'off', 'bf16']")
    if precision == "off":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        # Native bf16 only (Ampere and newer): is_bf16_supported() also counts the emulation of
        # T4/V100-class GPUs, where bf16 autocast is slower than fp32.
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else None
    # Without native bf16 instructions oneDNN emulates bf16 with fp32 arithmetic plus
    # conversions, so no speed-up is expected there (not measurable on this project's CPUs).
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to ``device`` in channels_last (in place; idempotent; parameters keep identity)."""
    return model.to(device=device, memory_format=torch.channels_last)


def make_optimizer(model: nn.Module, train_config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, or AdamW (decoupled decay, Loshchilov & Hutter 2019) when weight_decay > 0.

    The fused kernel (one pass over all parameters; CPU and CUDA) measured fastest here.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    if train_config.weight_decay > 0:
        return torch.optim.AdamW(params, lr=train_config.learning_rate,
                                 weight_decay=train_config.weight_decay, fused=fused)
    return torch.optim.Adam(params, lr=train_config.learning_rate, fused=fused)


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed per (trial seed, epoch): a resumed trial replays exactly the same epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _as_uint8_tensor(images) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if len(images) == 0:
        raise ValueError("no images to train or evaluate on (N = 0)")
    return images


def _to_input(batch: torch.Tensor, config: VAEConfig, device: torch.device) -> torch.Tensor:
    x = to_model_input(batch.to(device, non_blocking=True), config.model.input_range)
    return x.contiguous(memory_format=torch.channels_last)  # uint8 crossed the bus: 4× fewer bytes


def place_images(images: torch.Tensor, device: torch.device, budget_bytes: int) -> torch.Tensor:
    """Where a trial keeps its uint8 patches: on ``device`` when they fit ``budget_bytes`` (then
    every batch is indexed there, nothing crosses the bus), else where they are (each batch is
    then gathered into pinned memory and copied asynchronously, ``_gather``)."""
    if device.type != "cuda":
        return images
    if images.numel() <= budget_bytes:
        return images.to(device)
    log.info("%.0f MB of patches exceed the trial's device budget of %.0f MB; batches are "
             "copied from host memory", images.numel() / 1e6, budget_bytes / 1e6)
    return images


def _gather(images: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The batch ``images[index]`` (uint8) on ``device``, without waiting for the device:
    indexed there when the patches live there, else gathered into pinned host memory."""
    if images.device.type == device.type:
        return images[index]  # ``index`` is on the images' device (train_epoch puts it there)
    return images[index].pin_memory().to(device, non_blocking=True)


def _resolved(device: torch.device) -> torch.device:
    """``cuda`` → ``cuda:N`` (the current device): tensors report an index, comparisons need it."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _step_unless(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """``optimizer.step()`` that the device skips when ``found_inf`` (a 0/1 float tensor) is 1.

    Fused Adam takes the skip flag in its kernel, as it does for ``torch.amp.GradScaler``
    (which sets these same two attributes around ``step``): no host synchronisation per step.
    Other optimizers read the flag on the host.
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale, optimizer.found_inf = None, found_inf
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
    elif not bool(found_inf):
        optimizer.step()


def training_pair(batch: torch.Tensor, config: VAEConfig, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 batch → (model input, clean target, defect masks), uint8 / bool on the batch's device.

    Flips (``train.flip``) apply to both; the synthetic defects of denoising training
    (``train.denoise_probability``) only to the input, so the loss asks for the clean patch.
    """
    target = flip(batch, config.train.flip, generator)
    if config.train.denoise_probability == 0:
        return target, target, torch.zeros(target.shape[0], *target.shape[2:], dtype=torch.bool,
                                           device=target.device)
    corrupted, masks = corrupt(target, config.train.denoise_probability, generator)
    return corrupted, target, masks


def augmentation_generator(seed: int, epoch: int) -> torch.Generator:
    """The flips' and training defects' own stream: never the validation defects' seeds."""
    state = np.random.SeedSequence([seed, epoch, TRAIN_DEFECT_STREAM]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _fork_rng(device: torch.device):
    cuda = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images_uint8, config: VAEConfig,
                device: torch.device, *, epoch: int = 0, generator: torch.Generator | None = None
                ) -> dict[str, float]:
    """One pass over ``images_uint8`` (N, C, H, W) in shuffled batches → ``train/*`` means
    (per image; the terms whose weight is 0, other than mse, are left out).

    ``images_uint8`` may already be on ``device`` (``place_images``). Dropout masks and z
    samples come from torch's RNG, forked and seeded from ``(config.train.seed, epoch)`` (the
    caller's global RNG is left as it was); the batch order from ``generator`` when given, else
    from the same seed. The loss terms are summed on the device and read once, at the end. A
    non-finite loss term or gradient norm makes the device skip that step and every later one,
    so the weights stay as they were before it, and raises ``NonFiniteLossError`` naming it.
    """
    images = _as_uint8_tensor(images_uint8)
    device = _resolved(device)
    prepare_model(model, device)
    model.train()
    precision = autocast_dtype(config.train.precision, device)
    clip = config.train.grad_clip_norm if config.train.grad_clip_norm > 0 else math.inf
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = (*LOSS_TERMS, "grad_norm")
    sums = torch.zeros(len(LOSS_TERMS), device=device, dtype=torch.float64)
    failed = torch.zeros((), device=device)  # 1.0 from the first non-finite step on
    first_bad = torch.full((len(names) + 1,), math.nan, device=device)  # (step, *values)
    step_number = torch.zeros(1, device=device)  # the step, counted on the device (no copies)
    start = time.perf_counter()
    augment = config.train.flip != "none" or config.train.denoise_probability > 0
    augmentation = augmentation_generator(config.train.seed, epoch) if augment else None
    with _fork_rng(device):
        torch.manual_seed(epoch_seed(config.train.seed, epoch))
        # Drawn on the CPU (the same order on every device), moved once: indexing a batch then
        # needs no copy, and no copy means no wait for the device.
        order = torch.randperm(len(images), generator=generator).to(images.device,
                                                                    non_blocking=True)
        for index in order.split(config.train.batch_size):
            batch = _gather(images, index, device)
            if augmentation is None:
                x = target = _to_input(batch, config, device)
            else:
                noisy, clean, _ = training_pair(batch, config, augmentation)
                x = _to_input(noisy, config, device)
                target = x if noisy is clean else _to_input(clean, config, device)  # flips only
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=precision or torch.float32,
                                enabled=precision is not None):
                terms = vae_loss(model(x), target, config.loss)
            terms["loss"].backward()
            grad_norm = nn.utils.clip_grad_norm_(params, clip)
            values = torch.stack([terms[k].detach().float() for k in LOSS_TERMS]
                                 + [grad_norm.float()])
            bad = (~torch.isfinite(values).all()).float()
            newly = bad * (1 - failed)  # this step is the first non-finite one
            first_bad = torch.where(newly > 0, torch.cat([step_number, values]), first_bad)
            failed = torch.maximum(failed, bad)
            _step_unless(optimizer, failed)
            sums += torch.where(failed > 0, 0.0, values[:len(LOSS_TERMS)].double() * len(index))
            step_number += 1
    totals = torch.cat([sums, failed.double()[None], first_bad.double()]).tolist()  # one sync
    elapsed = time.perf_counter() - start
    if totals[len(LOSS_TERMS)]:
        optimizer.zero_grad(set_to_none=True)
        bad_step, *bad_values = totals[len(LOSS_TERMS) + 1:]
        name, value = next((n, v) for n, v in zip(names, bad_values, strict=True)
                           if not math.isfinite(v))
        raise NonFiniteLossError(name, value, epoch, int(bad_step))
    skipped = {"bce": config.loss.bce_weight == 0, "fft": config.loss.fft_weight == 0}
    metrics = {TRAIN_KEYS[name]: total / len(images)
               for name, total in zip(LOSS_TERMS, totals, strict=False)
               if not skipped.get(name, False)}  # a flat 0 of an unused term says nothing
    metrics[keys.TRAIN_IMAGES_PER_S] = len(images) / elapsed
    metrics[keys.TRAIN_EPOCH_TIME_S] = elapsed
    return metrics
