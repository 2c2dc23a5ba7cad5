"""Write a synthetic data set in the AITEX layout (the embedded default; nothing is downloaded).

Sizes: the small default (4 fabrics, 1024×64 strips = 16 patches of 64×64 each, 40 defect-free
+ 16 defective strips, ~1 s) is for CPU demos and searches at 64×64; ``full=True`` matches
AITEX's shape (7 fabrics, 4096×256 strips, 140 defect-free + 105 defective). Defects use AITEX
defect codes and the generators of ``vae.data.defects``; masks are soft-edged like AITEX's
(255 on the defect, a 1–2 pixel halo of grey below 128), so thresholding at > 127 recovers the
exact defect. Deterministic by ``seed``: every strip has its own seeded generator.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vae.data.defects import defect
from vae.data.fabrics import FABRICS, render, to_uint8

logger = logging.getLogger(__name__)
GENERATOR_VERSION = 2  # bump on any change to the pixels: the default set is cached by it
MANIFEST = "synthetic.json"
# AITEX defect codes (Silvestre-Blanes et al. 2019) and the generator that imitates each.
DEFECT_CODES = {"002": "line_break", "006": "line_break", "010": "line_break", "019": "stain",
                "025": "thick_place", "027": "hole", "029": "stain", "030": "hole",
                "036": "thin_place"}


@dataclass(frozen=True)
class Size:
    fabrics: int
    height: int
    width: int
    normal_per_fabric: int
    defective_per_fabric: int


SMALL = Size(fabrics=4, height=64, width=1024, normal_per_fabric=10, defective_per_fabric=4)
FULL = Size(fabrics=7, height=256, width=4096, normal_per_fabric=20, defective_per_fabric=15)


def _soft_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """255 on the defect, a grey halo (< 128) around it: soft-edged like AITEX's masks."""
    halo = mask.copy()
    for _ in range(int(rng.integers(1, 3))):
        grown = halo.copy()
        grown[1:] |= halo[:-1]
        grown[:-1] |= halo[1:]
        grown[:, 1:] |= halo[:, :-1]
        grown[:, :-1] |= halo[:, 1:]
        halo = grown
    out = np.where(halo, rng.integers(30, 120, mask.shape), 0).astype(np.uint8)
    out[mask] = 255
    return out


def _defective_strip(fabric_index: int, number: int, size: Size, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng([seed, 1, fabric_index, number])
    code = list(DEFECT_CODES)[int(rng.integers(len(DEFECT_CODES)))]
    image = render(FABRICS[fabric_index], size.height, size.width, rng)
    mask = np.zeros(image.shape, dtype=bool)
    window = size.height  # defects are drawn in a square window, sized like a patch
    for _ in range(int(rng.integers(1, 3))):
        left = int(rng.integers(0, size.width - window + 1))
        region = image[:, left:left + window]
        alpha, target, _ = defect(region, rng, DEFECT_CODES[code])
        image[:, left:left + window] = region + alpha * (target - region)
        mask[:, left:left + window] |= alpha > 0
    return to_uint8(image), _soft_mask(mask, rng), code


def _save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array, mode="L").save(path, compress_level=1)  # fast; AITEX is 8-bit gray


def generate_synthetic(out_dir: str | Path, *, full: bool = False, seed: int = 0) -> Path:
    """Write the synthetic AITEX-layout set into ``out_dir`` (absent or empty); returns it."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"output directory {str(out)!r} exists and is not empty; "
                              "choose a new or empty directory")
    size = FULL if full else SMALL
    for name in ("Defect_images", "NODefect_images", "Mask_images"):
        (out / name).mkdir(parents=True, exist_ok=True)
    started, last_log = time.monotonic(), time.monotonic()
    total = size.fabrics * (size.normal_per_fabric + size.defective_per_fabric)
    done = counter = 0
    for f in range(size.fabrics):
        fabric = FABRICS[f]
        roll = out / "NODefect_images" / fabric.roll
        roll.mkdir()
        for n in range(size.normal_per_fabric):
            rng = np.random.default_rng([seed, 0, f, n])
            counter += 1
            _save(to_uint8(render(fabric, size.height, size.width, rng)),
                  roll / f"{counter:04d}_000_{fabric.code}.png")
            done += 1
        for n in range(size.defective_per_fabric):
            image, mask, code = _defective_strip(f, n, size, seed)
            counter += 1
            stem = f"{counter:04d}_{code}_{fabric.code}"
            _save(image, out / "Defect_images" / f"{stem}.png")
            _save(mask, out / "Mask_images" / f"{stem}_mask.png")
            done += 1
        if time.monotonic() - last_log > 5.0 or f == size.fabrics - 1:
            logger.info("synthetic set: %d/%d strips written (%.1f s)", done, total,
                        time.monotonic() - started)
            last_log = time.monotonic()
    manifest = {"generator_version": GENERATOR_VERSION, "seed": seed, "full": full,
                "fabrics": [FABRICS[f].weave for f in range(size.fabrics)],
                "strip_shape": [size.height, size.width],
                "normal_strips": size.fabrics * size.normal_per_fabric,
                "defective_strips": size.fabrics * size.defective_per_fabric}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))  # last: marks a complete set
    return out
