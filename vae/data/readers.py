"""Decode the strips a scan found: image + union of its masks, or a reason to skip it.

What happens on each decoding quirk (never a crash, never a silent mislabel):
- LA / RGB / palette / 16-bit images and masks: converted (see ``decode``), counted in notes;
- zero-byte, truncated or non-PNG files and decompression bombs: the strip is skipped, counted;
- two masks (``_mask1``, ``_mask2``): their union; soft masks: pixel > ``mask_threshold``;
- a defect image whose mask has no pixel above the threshold (all black): skipped and counted —
  its defect is not annotated, so its patches would be mislabelled as defect-free;
- with ``data.resize``: image and mask are resized before patching (``vae.data.resize``);
- without it, a strip smaller than one patch: skipped and counted (the summary names the flags
  that would include it);
- a mask whose size differs from its image: ``DataError`` naming both files (the data set is
  inconsistent; guessing an alignment would mislabel pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vae.data.config import DataConfig
from vae.data.decode import UnreadableImage, read_array, read_mask
from vae.data.errors import DataError
from vae.data.layouts import Issue, Scan, StripSource
from vae.data.resize import resize_image, resize_mask

TOO_SMALL = "smaller than one patch"
NOT_COVERED = "not covered by whole strides: last patch aligned to the right/bottom edge"


@dataclass
class Strip:
    source: StripSource
    image: np.ndarray  # uint8 (C, H, W)
    mask: np.ndarray  # bool (H, W)
    notes: list[Issue]
    file: str  # the image, relative to the data root


def _formats(scan: Scan) -> tuple[str, ...] | None:
    # AITEX is PNG by definition: anything else under a .png name is a damaged file.
    return ("PNG",) if scan.format == "aitex" else None


def read_strip(scan: Scan, source: StripSource, config: DataConfig) -> Strip | Issue:
    """Decode one strip and fit it to the patches; an ``Issue`` (skip reason) for bad files."""
    strip = decode_strip(scan, source, config)
    if isinstance(strip, Issue):
        return strip
    return fit_strip(strip, config)


def fit_strip(strip: Strip, config: DataConfig) -> Strip | Issue:
    """Resize (``data.resize``) and check that at least one patch fits."""
    image, mask, issue = fit(strip.file, strip.image, strip.mask, config.patch_size,
                             config.stride, config.resize)
    if issue is not None and issue.kind == TOO_SMALL:
        return issue
    notes = strip.notes + ([issue] if issue is not None else [])
    return Strip(source=strip.source, image=image, mask=mask, notes=notes, file=strip.file)


def fit(file: str, image: np.ndarray, mask: np.ndarray, patch_size: int, stride: int,
        resize: int) -> tuple[np.ndarray, np.ndarray, Issue | None]:
    """``(image, mask, issue)`` resized to ``resize`` (0: as they are), with ``size_issue``'s
    verdict on the result: what the catalog and ``aitexvae score`` both cut patches from."""
    if resize:
        image, mask = resize_image(image, resize), resize_mask(mask, resize)
    height, width = mask.shape
    return image, mask, size_issue(file, width, height, patch_size, stride)


def decode_strip(scan: Scan, source: StripSource, config: DataConfig) -> Strip | Issue:
    """Image + union of its masks at native resolution, or why the strip cannot be used."""
    formats = _formats(scan)
    image_file = scan.rel(source.image)
    try:
        image, mode = read_array(source.image, channels=config.channels,
                                 max_pixels=config.max_image_pixels, formats=formats)
    except UnreadableImage as error:
        return Issue(image_file, error.reason)
    notes = []
    if mode not in ("L", "RGB" if config.channels == 3 else "L"):
        notes.append(Issue(image_file, f"converted from mode {mode}"))
    height, width = image.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for mask_path in source.masks:
        mask_file = scan.rel(mask_path)
        try:
            part, mask_mode = read_mask(mask_path, threshold=config.mask_threshold,
                                        max_pixels=config.max_image_pixels, formats=formats)
        except UnreadableImage as error:
            return Issue(image_file, f"its mask {mask_file} is unreadable: {error.reason}",
                         kind="its mask is unreadable")
        if part.shape != (height, width):
            raise DataError(f"mask {mask_file} is {part.shape[1]}x{part.shape[0]} but its image "
                            f"{image_file} is {width}x{height} (width x height); fix or remove "
                            "one of them")
        if mask_mode != "L":
            notes.append(Issue(mask_file, f"converted from mode {mask_mode}"))
        mask |= part
    if len(source.masks) > 1:
        notes.append(Issue(image_file, f"union of {len(source.masks)} masks"))
    if source.defective and not mask.any():
        return Issue(image_file, f"defect image whose mask has no pixel > "
                                 f"{config.mask_threshold} (all black): defect not annotated")
    chw = np.ascontiguousarray(image[None] if image.ndim == 2 else image.transpose(2, 0, 1))
    return Strip(source=source, image=chw, mask=mask, notes=notes, file=image_file)


def size_issue(file: str, width: int, height: int, patch_size: int, stride: int) -> Issue | None:
    """Why an image of this size cannot be cut (kind ``TOO_SMALL``), or a note on its edge."""
    if height < patch_size or width < patch_size:
        return Issue(file, f"image {width}x{height} is smaller than one {patch_size}x{patch_size} "
                           "patch", kind=TOO_SMALL)
    if (width - patch_size) % stride or (height - patch_size) % stride:
        return Issue(file, f"{width}x{height} is {NOT_COVERED}", kind=NOT_COVERED)
    return None
