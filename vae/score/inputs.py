"""What ``aitexvae score`` reads: the strips of a data set, or loose image files without labels.

A data set is read exactly as a search reads it (``vae.data``'s scan and strip reader: the same
conversions, mask thresholding and skip rules), one strip at a time so memory stays bounded.
Loose files go through the same decoder; as nothing says a conversion is intended, a file whose
colour channels differ from the model's (RGB for a gray model, or the reverse) is skipped with
a message rather than silently converted. Images are yielded at native resolution: the
scoring run resizes them as the model's data was (``model.input_resize``) and skips those that
are then still smaller than one patch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vae.data.config import DataConfig
from vae.data.decode import UnreadableImage, read_array
from vae.data.errors import DataError
from vae.data.layouts import Issue, scan
from vae.data.readers import decode_strip

DATA_FORMATS = ("aitex", "folder")
# Pillow modes whose colour is one band (alpha aside): AITEX's LA strips count as gray.
GRAY_MODES = ("1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class Item:
    """One image to score: pixels, and its mask and metadata when the source has labels."""

    file: str  # relative to the data root, or the path as given
    image: np.ndarray  # uint8 (C, H, W)
    mask: np.ndarray | None  # bool (H, W); None when unlabelled
    fabric: str = ""
    defect_code: str = ""


@dataclass
class Source:
    """``total`` images to try, yielded one by one as an ``Item`` or an ``Issue`` (skipped)."""

    total: int
    items: Iterator[Item | Issue]
    skipped: list[Issue] = field(default_factory=list)  # found while listing, before reading
    notes: list[Issue] = field(default_factory=list)  # used with a remark (filled while reading)
    labelled: bool = True


def dataset_source(root: str | Path, data_format: str, *, channels: int) -> Source:
    """Every strip under ``root`` (``aitex`` or ``folder`` layout), labelled from its masks.

    Raises ``vae.data.errors.LayoutError`` (with the expected layout) for a wrong root.
    """
    if data_format not in DATA_FORMATS:
        raise ValueError(f"unknown data format {data_format!r}; choose one of {list(DATA_FORMATS)}")
    config = DataConfig(format=data_format, root=str(root), channels=channels, cache=False)
    listing = scan(Path(root), data_format)
    notes = list(listing.notes)

    def items() -> Iterator[Item | Issue]:
        for strip_source in listing.sources:
            try:
                strip = decode_strip(listing, strip_source, config)
            except DataError as error:  # e.g. a mask whose size differs from its image
                yield Issue(listing.rel(strip_source.image), str(error))
                continue
            if isinstance(strip, Issue):
                yield strip
                continue
            notes.extend(strip.notes)
            yield Item(file=listing.rel(strip_source.image), image=strip.image, mask=strip.mask,
                       fabric=strip_source.fabric, defect_code=strip_source.defect_code)

    return Source(total=len(listing.sources), items=items(), skipped=list(listing.skipped),
                  notes=notes)


def read_image_file(path: str | Path, *, channels: int,
                    max_pixels: int = DataConfig.max_image_pixels) -> Item | Issue:
    """One loose image file → an unlabelled ``Item``, or an ``Issue`` saying why it is skipped."""
    name = str(path)
    try:
        array, mode = read_array(Path(path), channels=channels, max_pixels=max_pixels,
                                 formats=None)
    except UnreadableImage as error:
        return Issue(name, error.reason)
    file_channels = 1 if mode in GRAY_MODES else 3
    if file_channels != channels:
        return Issue(name, f"has {file_channels} colour channel(s) (mode {mode}) but the model "
                           f"was trained on {channels}; allowed: {channels}-channel images "
                           "(convert the file first)")
    chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return Item(file=name, image=np.ascontiguousarray(chw), mask=None)


def files_source(paths: Sequence[str | Path], *, channels: int) -> Source:
    """Loose image files (any format Pillow reads), unlabelled, in the order given."""
    items = (read_image_file(p, channels=channels) for p in paths)
    return Source(total=len(paths), items=items, labelled=False)
