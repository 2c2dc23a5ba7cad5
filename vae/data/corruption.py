"""Training-time corruption for denoising training: reconstruct the clean patch from a patch
with a synthetic defect pasted in (DRAEM, Zavrtanik et al. 2021, §3.1; RIAD's inpainting idea).

This generator is deliberately *different* from the one that builds the validation defects
(``vae.data.defects``: parametric lines, holes, stains and bands), so ``val/auroc`` keeps
measuring how a model reacts to defects it never saw rather than how well it learned one
generator (AHL, Zhu et al. 2024, keeps its generators apart for the same reason). Here:

- the region is a thresholded, bilinearly upsampled low-resolution noise field (Perlin-like
  blobs, DRAEM), covering 0.05 %–5 % of the patch (log-uniform; AITEX defects have a median of
  ~0.15 % of a 256² patch);
- the fill is *texture from elsewhere*: another patch of the batch, transposed (the weave turned
  by 90°), shifted in brightness by 10–50 gray levels and blended with an opacity of 0.4–1.

Everything is drawn on the CPU from a caller-given ``torch.Generator`` whose seed stream
(``TRAIN_DEFECT_STREAM``) never meets the validation seeds, then applied on the images' device:
a batch gets the same defects and flips on a GPU as on a CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TRAIN_DEFECT_STREAM = 0x7D3F  # mixed into the epoch seed: not the validation defects' stream
COVERAGE = (5e-4, 5e-2)  # share of the patch a training defect covers (log-uniform)
NOISE_GRIDS = (4, 8, 16)  # low-resolution noise sizes: larger grids give smaller, more blobs
SHIFT_LEVELS = (10.0, 50.0)
OPACITY = (0.4, 1.0)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def blob_masks(n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """(n, H, W) bool blobs: upsampled noise above its (1 - coverage) quantile."""
    height, width = size
    grid = NOISE_GRIDS[int(torch.randint(len(NOISE_GRIDS), (1,), generator=generator))]
    noise = torch.rand(n, 1, grid, grid, generator=generator)
    field = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    field = field.flatten(1)  # (n, H*W)
    log_low, log_high = math.log(COVERAGE[0]), math.log(COVERAGE[1])
    coverage = torch.exp(_uniform(n, log_low, log_high, generator))
    keep = (coverage * field.shape[1]).ceil().long().clamp(min=1)  # pixels per blob set
    rank = field.shape[1] - keep + 1  # kthvalue is 1-based: the keep-th largest value
    threshold = torch.stack([row.kthvalue(int(k)).values for row, k in zip(field, rank,
                                                                            strict=True)])
    return (field >= threshold[:, None]).view(n, height, width)


def corrupt(images: torch.Tensor, probability: float, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, C, H, W) → (corrupted uint8 copy, masks bool (B, H, W)).

    Each patch is corrupted with ``probability``. ``masks`` marks exactly the pixels whose value
    changed (a blend that lands on the original value is not a defect pixel); every other pixel
    is bit-identical to the input.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images (B, C, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    batch, _, height, width = images.shape
    device = images.device
    out = images.clone()
    chosen = torch.rand(batch, generator=generator) < probability
    if batch == 0 or not bool(chosen.any()) or height != width:
        return out, torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    index_cpu = chosen.nonzero().flatten()
    # Drawn on the CPU (one stream of randoms on every device); copied without waiting for the
    # device (non_blocking: from pageable memory the copy is staged, the host does not block).
    blobs = blob_masks(len(index_cpu), (height, width), generator).to(device, non_blocking=True)
    sign = torch.where(torch.rand(len(index_cpu), generator=generator) < 0.5, -1.0, 1.0)
    shift = (sign * _uniform(len(index_cpu), *SHIFT_LEVELS, generator)).to(device,
                                                                           non_blocking=True)
    opacity = _uniform(len(index_cpu), *OPACITY, generator).to(device, non_blocking=True)
    index = index_cpu.to(device, non_blocking=True)
    x = images[index].float()  # (k, C, H, W)
    # Texture from elsewhere: the previous chosen patch (itself when only one), weave turned 90°.
    source = images[index.roll(1)].float().transpose(-1, -2)
    fill = (source + shift[:, None, None, None]).clamp_(0, 255)
    blended = x + opacity[:, None, None, None] * (fill - x)
    corrupted = torch.where(blobs[:, None], blended.round_().clamp_(0, 255), x).to(torch.uint8)
    out[index] = corrupted
    masks = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    masks[index] = (corrupted != images[index]).any(dim=1)
    return out, masks


def flip(images: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Random label-preserving flips of a batch: ``none``, ``horizontal`` or ``both`` axes.

    Each patch is flipped left-right with probability 1/2 (and, for ``both``, top-bottom with
    probability 1/2): woven fabric looks the same mirrored, so this adds views, not noise.
    """
    if mode == "none":
        return images
    out = images.clone()
    axes = ((-1,), (-2,)) if mode == "both" else ((-1,),)
    for axis in axes:
        picked = (torch.rand(len(out), generator=generator) < 0.5).nonzero().flatten()
        picked = picked.to(out.device, non_blocking=True)
        out[picked] = out[picked].flip(axis)
    return out
