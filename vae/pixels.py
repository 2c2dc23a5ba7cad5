"""Pixel scaling between stored uint8 images and what the model sees, in one place.

The range follows the output activation (``ModelConfig.input_range``) and is stored in the
config, so training, scoring and a pulled model all scale identically.
"""

from __future__ import annotations

import numpy as np
import torch

RANGES = ("unit", "symmetric")


def to_model_input(images: np.ndarray | torch.Tensor, input_range: str) -> torch.Tensor:
    """uint8 (N, C, H, W) in 0..255 → float32 in [0, 1] (``unit``) or [-1, 1] (``symmetric``)."""
    if input_range not in RANGES:
        raise ValueError(f"unknown input range {input_range!r}; choose one of {list(RANGES)}")
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    x = x.float().div_(255.0)
    return x.mul_(2.0).sub_(1.0) if input_range == "symmetric" else x


def to_unit(x: torch.Tensor, input_range: str) -> torch.Tensor:
    """Model-space values → [0, 1] scale (for residual maps and pictures)."""
    if input_range not in RANGES:
        raise ValueError(f"unknown input range {input_range!r}; choose one of {list(RANGES)}")
    return (x + 1.0) * 0.5 if input_range == "symmetric" else x
