"""Decode one image or mask file into a NumPy array, defensively.

Real copies of AITEX store some images and masks as LA (gray + alpha) instead of L; other data
sets bring RGB, palette or 16-bit files. Everything becomes uint8 gray (or RGB for 3 channels):
LA keeps its gray band (the alpha carries nothing), RGB uses Pillow's ITU-R 601-2 luma, 16-bit
is scaled by 1/257. A file that cannot be decoded raises ``UnreadableImage`` with the reason —
zero bytes, truncated data, not an image of an allowed format, or more pixels than allowed
(checked from the header, before any pixel is decoded: a decompression bomb costs nothing).
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class UnreadableImage(Exception):
    """The file is not a usable image; ``reason`` says why (it goes into the summary)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _to_uint8(img: Image.Image, channels: int) -> np.ndarray:
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.float64)
        gray = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1) if channels == 3 else gray
    if channels == 1:
        if img.mode == "LA":
            img = img.getchannel("L")
        elif img.mode != "L":
            img = img.convert("L")
    elif img.mode != "RGB":
        img = img.convert("L").convert("RGB") if img.mode in ("LA", "PA") else img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def read_array(path: Path, *, channels: int = 1, max_pixels: int = 50_000_000,
               formats: tuple[str, ...] | None = ("PNG",)) -> tuple[np.ndarray, str]:
    """``(array, original_mode)``: (H, W) uint8 for 1 channel, (H, W, 3) for 3."""
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file (0 bytes)")
    except OSError as error:
        raise UnreadableImage(f"cannot stat file: {error.strerror or error}") from error
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1× and 2× its own limit; ours applies below either.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=formats) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise UnreadableImage(
                        f"decompression bomb guard: {width}x{height} = {width * height} pixels "
                        f"> max_image_pixels={max_pixels}")
                img.load()
                return _to_uint8(img, channels), img.mode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(f"decompression bomb: {error}") from error
    except UnreadableImage:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, MemoryError) as error:
        kind = "not an image of format " + "/".join(formats) \
            if isinstance(error, Image.UnidentifiedImageError) and formats else "cannot decode"
        raise UnreadableImage(f"{kind}: {error}") from error


def read_mask(path: Path, *, threshold: int, max_pixels: int = 50_000_000,
              formats: tuple[str, ...] | None = ("PNG",)) -> tuple[np.ndarray, str]:
    """Bool (H, W) mask: ``value > threshold`` on the gray band (soft edges → hard mask)."""
    gray, mode = read_array(path, channels=1, max_pixels=max_pixels, formats=formats)
    return gray > threshold, mode
