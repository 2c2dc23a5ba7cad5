"""Resize an image, its mask and an anomaly map: the one place that owns ``data.resize``.

Folder data sets (MVTec-style) bring images of many sizes; anomalib and the MVTec baselines
resize each one to the model's input (N×N, aspect ratio not kept) instead of cutting patches
at native resolution. AITEX strips are the exception: their defects are a few pixels wide, so
they are patched natively (``resize=0``).

- images: Pillow's bilinear filter, which widens its support when shrinking (antialiased, like
  ``torchvision.transforms.Resize(antialias=True)`` in anomalib), then rounded back to uint8;
- masks: a resized pixel is a defect when *any* source pixel under it is (box filter > 0). Plain
  nearest-neighbour, as the issue suggested, keeps masks binary too but drops a defect thinner
  than the scale factor, turning an anomalous image into a "good" one; this rule keeps every
  annotated defect and stays binary;
- anomaly maps go the other way (model size → the original image size, bilinear), so pixel
  metrics and overlays compare with the original mask, never a resized one.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(C, H, W)`` → uint8 ``(C, size, size)``."""
    if image.shape[1:] == (size, size):
        return image
    bands = [np.asarray(Image.fromarray(band).resize((size, size), Image.Resampling.BILINEAR))
             for band in image]
    return np.ascontiguousarray(np.stack(bands))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool ``(H, W)`` → bool ``(size, size)``; a defect pixel never disappears."""
    if mask.shape == (size, size):
        return mask
    area = Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.Resampling.BOX)
    return np.asarray(area) > 0


def resize_map(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """float ``(h, w)`` → float32 ``(height, width)`` (bilinear), e.g. back to the original image."""
    if anomaly_map.shape == (height, width):
        return anomaly_map.astype(np.float32, copy=False)
    image = Image.fromarray(np.ascontiguousarray(anomaly_map, dtype=np.float32))
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
