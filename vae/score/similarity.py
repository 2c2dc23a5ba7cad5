"""Structural dissimilarity maps: 1 - SSIM and 1 - multi-scale gradient-magnitude similarity.

Both compare local structure rather than brightness, so a reconstruction that gets the weave's
pattern right but its level slightly off scores low, and a missing yarn scores high.

- SSIM: Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error visibility
  to structural similarity", eq. 13, with the usual Gaussian window (σ = 1.5) and
  C1 = (0.01 L)², C2 = (0.03 L)² for L = 1.
- MSGMS: Xue et al. 2014 (GMSD) for the per-pixel similarity
  ``(2 g_x g_y + c) / (g_x² + g_y² + c)`` of Prewitt gradient magnitudes; averaged over four
  scales (1, 1/2, 1/4, 1/8), each upsampled back, as RIAD (Zavrtanik et al. 2021) and DRAEM
  score reconstructions. c = 0.0026 as in RIAD's code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vae.score.blur import gaussian_blur

SSIM_SIGMA = 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2
GMS_C = 0.0026
GMS_SCALES = (1, 2, 4, 8)
_PREWITT = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0


def ssim_map(x: torch.Tensor, y: torch.Tensor, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(B, H, W) images in [0, 1] → (B, H, W) SSIM, Gaussian-weighted local statistics."""
    mu_x, mu_y = gaussian_blur(x, sigma), gaussian_blur(y, sigma)
    var_x = gaussian_blur(x * x, sigma) - mu_x * mu_x
    var_y = gaussian_blur(y * y, sigma) - mu_y * mu_y
    cov = gaussian_blur(x * y, sigma) - mu_x * mu_y
    return ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) \
        / ((mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2))


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) → (B, 1, H, W) Prewitt gradient magnitude, replicate-padded."""
    kernel = _PREWITT.to(images.device, images.dtype)
    weight = torch.stack([kernel, kernel.T])[:, None]  # (2, 1, 3, 3): d/dx, d/dy
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(padded, weight)  # (B, 2, H, W)
    return gradients.square().sum(1, keepdim=True).sqrt()


def msgms_map(x: torch.Tensor, y: torch.Tensor, scales: tuple[int, ...] = GMS_SCALES
              ) -> torch.Tensor:
    """(B, H, W) images in [0, 1] → (B, H, W) mean GMS over ``scales`` (1 = full size)."""
    height, width = x.shape[-2:]
    x4, y4 = x[:, None], y[:, None]  # (B, 1, H, W)
    total = torch.zeros_like(x4)
    for scale in scales:
        xs = F.avg_pool2d(x4, scale) if scale > 1 else x4
        ys = F.avg_pool2d(y4, scale) if scale > 1 else y4
        gx, gy = gradient_magnitude(xs), gradient_magnitude(ys)
        gms = (2 * gx * gy + GMS_C) / (gx * gx + gy * gy + GMS_C)
        if scale > 1:
            gms = F.interpolate(gms, size=(height, width), mode="bilinear", align_corners=False)
        total += gms
    return (total / len(scales))[:, 0]
