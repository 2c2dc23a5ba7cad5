"""A folder-layout (MVTec-style) data set as users bring them: many sizes, modes and formats.

``write_folder_set(root)`` writes real files and returns what a correct reader makes of them:

- train/good: 6 images, 2 of them smaller than a 32-px patch (24x40 and 20x28), one RGB JPEG,
  one LA PNG, one 16-bit PNG;
- test/good: 2 images (one JPEG);
- test/hole: 2 images with PNG masks holding a tiny defect (2x2 px: it must survive resizing);
- test/stain: 1 image without a mask (skipped: its pixels cannot be labelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PATCH = 32


@dataclass(frozen=True)
class FolderSet:
    root: Path
    sizes: dict[str, tuple[int, int]]  # strip name (relative, no suffix) → (width, height)
    defects: dict[str, tuple[int, int, int, int]]  # defective strip → (y0, y1, x0, x1)
    small: tuple[str, ...]  # images smaller than one PATCH x PATCH patch
    unlabelled: tuple[str, ...]  # defect images without a mask (always skipped)


def _pixels(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    weave = 128 + 50 * np.sin(rows / 1.7) * np.cos(cols / 2.3)
    return np.clip(weave + rng.normal(0, 8, (height, width)), 0, 255).astype(np.uint8)


def _write(path: Path, gray: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(gray, mode="L")
    if mode == "RGB":
        image = image.convert("RGB")
    elif mode == "LA":
        image = Image.merge("LA", (image, Image.new("L", image.size, 255)))
    elif mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    image.save(path, quality=95) if path.suffix == ".jpg" else image.save(path)


def write_folder_set(root: Path, seed: int = 0) -> FolderSet:
    rng = np.random.default_rng(seed)
    files = [  # (relative path, width, height, mode)
        ("train/good/000.png", 48, 40, "L"), ("train/good/001.png", 24, 40, "L"),
        ("train/good/002.jpg", 70, 50, "RGB"), ("train/good/003.png", 20, 28, "LA"),
        ("train/good/004.png", 64, 33, "I;16"), ("train/good/005.png", 40, 40, "L"),
        ("test/good/000.jpg", 60, 45, "L"), ("test/good/001.png", 36, 52, "L"),
        ("test/hole/000.png", 90, 44, "L"), ("test/hole/001.png", 40, 64, "RGB"),
        ("test/stain/000.png", 40, 40, "L"),
    ]
    defects = {"test/hole/000": (10, 12, 70, 72), "test/hole/001": (50, 52, 5, 7)}
    sizes = {}
    for name, width, height, mode in files:
        gray = _pixels(rng, width, height)
        stem = name.rsplit(".", 1)[0]
        if stem in defects:
            y0, y1, x0, x1 = defects[stem]
            gray[y0:y1, x0:x1] = 5
            mask = np.zeros((height, width), np.uint8)
            mask[y0:y1, x0:x1] = 255
            kind, number = stem.split("/")[1:]
            _write(root / "ground_truth" / kind / f"{number}_mask.png", mask, "L")
        _write(root / name, gray, mode)
        sizes[stem] = (width, height)
    small = tuple(s for s, (w, h) in sizes.items() if w < PATCH or h < PATCH)
    return FolderSet(root=root, sizes=sizes, defects=defects, small=small,
                     unlabelled=("test/stain/000",))
