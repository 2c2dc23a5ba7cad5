"""A tiny AITEX-layout data set with every real-world quirk, written as real PNG files.

Strips are 256×32 (8 patches of 32×32), so tests run in milliseconds. ``write_aitex_fixture``
returns the root; ``EXPECTED`` documents what a correct reader must make of it.

Quirks reproduced (file → what it exercises):
- NODefect_images/roll_a/0001..0008_000_00.png, roll_b/0009..0016_000_01.png: 16 normal strips;
  0003 is stored as LA, 0010 as RGB;
- NODefect_images/roll_b/0018_00_01.png: the extra non-standard name (used as normal, noted);
- NODefect_images/roll_a/Thumbs.db: not a PNG name (skipped);
- Defect_images/0100_002_00.png: soft mask (core 255, halo 100 and 127 → not defect);
- Defect_images/0101_006_00.png + mask: both LA;
- Defect_images/0102_010_01.png: 236 wide (not a multiple of 32, like AITEX's 3796 of 256);
- Defect_images/0103_019_01.png: no mask (skipped);
- Defect_images/0104_025_00.png: _mask1 + _mask2 (union);
- Defect_images/0105_027_01.png: all-black mask (skipped);
- Defect_images/0106_029_00.png: RGB image;
- Defect_images/0107_030_00.png zero bytes, 0108_030_01.png truncated, 0109_036_00.png text,
  0110_002_01.png decompression bomb header (each has a mask; all skipped);
- Mask_images/0200_002_00_mask.png: mask without an image (skipped).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH, PATCH = 32, 256, 32

# Defect rectangles (y0, y1, x0, x1) per defect strip: what the reader must find.
CORE = {"0100_002_00": (4, 8, 40, 50), "0101_006_00": (10, 14, 100, 103),
        "0102_010_01": (20, 24, 220, 230), "0106_029_00": (0, 3, 0, 5)}
UNION = ((2, 4, 10, 12), (20, 22, 200, 210))  # 0104_025_00: _mask1, _mask2

EXPECTED = {
    "normal_strips": 17,  # 16 + the non-standard name
    "defective_strips": 5,  # 0100, 0101, 0102, 0104, 0106
    "patches": 22 * 8,  # the 236-wide strip also gives 8 (7 + one right-aligned)
    "skipped": {"NODefect_images/roll_a/Thumbs.db": "not a .png file",
                "Defect_images/0103_019_01.png": "no mask",
                "Defect_images/0105_027_01.png": "all black",
                "Defect_images/0107_030_00.png": "0 bytes",
                "Defect_images/0108_030_01.png": "cannot decode",
                "Defect_images/0109_036_00.png": "not an image",
                "Defect_images/0110_002_01.png": "decompression bomb",
                "Mask_images/0200_002_00_mask.png": "mask without"},
}


def texture(rng: np.random.Generator, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    return rng.integers(90, 170, (height, width), dtype=np.uint8)


def save(array: np.ndarray, path: Path, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode="L")
    if mode == "LA":
        image = Image.merge("LA", (image, Image.new("L", image.size, 255)))
    elif mode == "RGB":
        image = image.convert("RGB")
    image.save(path)


def mask_from(rects, width: int = WIDTH, value: int = 255) -> np.ndarray:
    mask = np.zeros((HEIGHT, width), np.uint8)
    for y0, y1, x0, x1 in rects:
        mask[y0:y1, x0:x1] = value
    return mask


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims ``width × height`` pixels (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data \
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) \
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def write_aitex_fixture(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    normal = root / "NODefect_images"
    for n in range(1, 17):
        fabric, roll = ("00", "roll_a") if n <= 8 else ("01", "roll_b")
        mode = {3: "LA", 10: "RGB"}.get(n, "L")
        save(texture(rng), normal / roll / f"{n:04d}_000_{fabric}.png", mode)
    save(texture(rng), normal / "roll_b" / "0018_00_01.png")
    (normal / "roll_a" / "Thumbs.db").write_bytes(b"\x00" * 10)
    defects, masks = root / "Defect_images", root / "Mask_images"
    soft = mask_from([CORE["0100_002_00"]])
    soft[3, 40:50], soft[8, 40:50] = 100, 127  # soft edges below/at the threshold
    save(texture(rng), defects / "0100_002_00.png")
    save(soft, masks / "0100_002_00_mask.png")
    save(texture(rng), defects / "0101_006_00.png", "LA")
    save(mask_from([CORE["0101_006_00"]]), masks / "0101_006_00_mask.png", "LA")
    save(texture(rng, width=236), defects / "0102_010_01.png")
    save(mask_from([CORE["0102_010_01"]], width=236), masks / "0102_010_01_mask.png")
    save(texture(rng), defects / "0103_019_01.png")
    save(texture(rng), defects / "0104_025_00.png")
    save(mask_from([UNION[0]]), masks / "0104_025_00_mask1.png")
    save(mask_from([UNION[1]]), masks / "0104_025_00_mask2.png")
    save(texture(rng), defects / "0105_027_01.png")
    save(mask_from([]), masks / "0105_027_01_mask.png")
    save(texture(rng), defects / "0106_029_00.png", "RGB")
    save(mask_from([CORE["0106_029_00"]]), masks / "0106_029_00_mask.png")
    buffer = io.BytesIO()
    Image.fromarray(texture(rng)).save(buffer, format="PNG")
    (defects / "0107_030_00.png").write_bytes(b"")
    (defects / "0108_030_01.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (defects / "0109_036_00.png").write_text("this is not a PNG file\n")
    (defects / "0110_002_01.png").write_bytes(bomb_png())
    for stem in ("0107_030_00", "0108_030_01", "0109_036_00", "0110_002_01", "0200_002_00"):
        save(mask_from([(0, 4, 0, 4)]), masks / f"{stem}_mask.png")
    return root
