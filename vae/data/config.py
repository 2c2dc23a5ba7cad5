"""``DataConfig``: which data set to read and how to cut, label, split and cache it.

Defaults mirror the protocol of published AITEX results: 256×256 patches labelled from the
pixel masks (any defect pixel → anomalous), defect-free strips split 3:1 train:test by strip,
and a seeded slice of the training strips held out for validation. ``format="synthetic"``
reads the embedded synthetic set (generated on first use, see ``vae.data.home``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vae.config import ConfigError, check_resize

FORMATS = ("synthetic", "aitex", "folder")
VAL_DEFECTS = ("builtin", "matched")
SMALL_SYNTHETIC_HEIGHT = 64  # strip height of the small embedded synthetic set


def default_format(root: str | None) -> str:
    """The format of a data set nobody named one for: the embedded synthetic set without a root,
    AITEX with one. The one owner of this rule (``data check``, ``tune``); DataConfig then
    checks that a real format has its root."""
    return "synthetic" if root is None else "aitex"


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low \
            or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"data.{name}={value!r} is invalid; allowed: an integer {allowed}")


def _check_fraction(name: str, value: object, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not 0.0 <= value < high:
        raise ConfigError(f"data.{name}={value!r} is out of range; allowed [0, {high})")


def default_resize(data_format: str, patch_size: int) -> int:
    """``data.resize`` when none is given: see ``DataConfig.resize``."""
    return patch_size if data_format == "folder" else 0


@dataclass(frozen=True)
class DataConfig:
    """Every data knob with its default; validated on construction, strict ``from_dict``."""

    format: str = "synthetic"  # synthetic | aitex | folder
    root: str | None = None  # required for aitex/folder; None with synthetic → embedded default
    patch_size: int = 256
    stride: int | None = None  # None → patch_size (non-overlapping, plus one edge-aligned patch)
    # Stride of the *training* patches only (val and test keep ``stride``): below it, training
    # sees overlapping patches, i.e. the weave at more phases. None → ``stride``.
    train_stride: int | None = None
    # Resize every image (and its mask) to resize×resize before cutting patches: 0 = native
    # resolution; None = the format's default, resolved on construction: ``patch_size`` for
    # ``folder`` (one patch per image, the MVTec/anomalib convention: such sets bring images of
    # many sizes, often smaller than a patch) and 0 for AITEX and the synthetic set (strips are
    # patched natively; a few-pixel defect would not survive a 16x shrink). See vae.data.resize.
    resize: int | None = None
    channels: int = 1  # 1: gray (RGB is converted), 3: RGB (gray is replicated)
    mask_threshold: int = 127  # AITEX masks are soft-edged: a pixel is a defect if value > this
    min_defect_pixels: int = 1  # a patch is anomalous when it holds at least this many
    test_fraction: float = 0.25  # of each fabric's defect-free strips (3:1 train:test)
    val_fraction: float = 0.2  # of the remaining training strips, held out for validation
    # Of each fabric's *defective* strips, held out as a real-defect validation set (never
    # trained on, never in test): what `--objective real|blend` ranks trials by. 0: none.
    real_val_fraction: float = 0.25
    seed: int = 0  # the split and the validation defects follow it
    defects_per_patch: int = 1  # synthetic defects injected into each validation patch
    # "builtin": vae.data.defects' sizes and contrasts. "matched": cut to the areas and contrasts
    # of the real defects held out in real_val (when there are any; else builtin).
    val_defects: str = "builtin"
    synthetic_full: bool = False  # format synthetic: the AITEX-sized set instead of the small one
    max_image_pixels: int = 50_000_000  # larger images are skipped (decompression-bomb guard)
    cache: bool = True
    cache_dir: str | None = None  # None → <AITEXVAE_HOME>/cache/patches

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"data.format={self.format!r} is invalid; choose one of "
                              f"{list(FORMATS)}")
        if self.format != "synthetic" and not self.root:
            raise ConfigError(f"data.root is required for data.format={self.format!r}; "
                              "give the directory that holds the data set")
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"data.root={self.root!r} is invalid; allowed: a path string")
        _check_int("patch_size", self.patch_size, 8, 4096)
        if self.stride is None:
            object.__setattr__(self, "stride", self.patch_size)  # resolve once, keep it frozen
        _check_int("stride", self.stride, 1, self.patch_size)
        if self.train_stride is None:
            object.__setattr__(self, "train_stride", self.stride)
        _check_int("train_stride", self.train_stride, 1, self.stride)
        if self.stride % self.train_stride:
            # val/test patches are picked out of the finer cut; only a divisor keeps them all.
            raise ConfigError(f"data.train_stride={self.train_stride} is invalid; allowed: a "
                              f"divisor of data.stride={self.stride} (e.g. {self.stride // 2})")
        if self.resize is None:
            object.__setattr__(self, "resize", default_resize(self.format, self.patch_size))
        check_resize("data.resize", self.resize, self.patch_size)
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ConfigError(f"data.channels={self.channels!r} is invalid; allowed: 1 or 3")
        _check_int("mask_threshold", self.mask_threshold, 0, 254)
        _check_int("min_defect_pixels", self.min_defect_pixels, 1)
        _check_fraction("test_fraction", self.test_fraction, 1.0)
        _check_fraction("val_fraction", self.val_fraction, 1.0)
        _check_fraction("real_val_fraction", self.real_val_fraction, 1.0)
        _check_int("seed", self.seed, 0)
        _check_int("defects_per_patch", self.defects_per_patch, 1, 8)
        if self.val_defects not in VAL_DEFECTS:
            raise ConfigError(f"data.val_defects={self.val_defects!r} is invalid; choose one of "
                              f"{list(VAL_DEFECTS)}")
        for name in ("synthetic_full", "cache"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"data.{name}={getattr(self, name)!r} is invalid; allowed: "
                                  "true or false")
        _check_int("max_image_pixels", self.max_image_pixels, 1)
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            raise ConfigError(f"data.cache_dir={self.cache_dir!r} is invalid; allowed: a path")
        if self.format == "synthetic" and self.root is None and not self.synthetic_full \
                and self.patch_size > SMALL_SYNTHETIC_HEIGHT:
            raise ConfigError(
                f"data.patch_size={self.patch_size} does not fit the small synthetic set "
                f"(strips are {SMALL_SYNTHETIC_HEIGHT} px high); use a patch_size <= "
                f"{SMALL_SYNTHETIC_HEIGHT} or synthetic_full=true")

    @property
    def catalog_stride(self) -> int:
        """The stride the catalog is cut at: the finer of the two (splits thin val/test out)."""
        return int(min(self.stride, self.train_stride))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        """Strict: unknown keys raise ``ConfigError`` naming the valid ones."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"data config must be a mapping, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown data key(s) {unknown}; valid keys: {names}")
        return cls(**data)

    def with_overrides(self, **changes: Any) -> DataConfig:
        values = self.to_dict()
        if "patch_size" in changes and "stride" not in changes \
                and self.stride == self.patch_size:
            values["stride"] = None  # a default stride follows a new patch size
        if ("stride" in changes or values["stride"] is None) and "train_stride" not in changes \
                and self.train_stride == self.stride:
            values["train_stride"] = None  # ... and a default training stride follows both
        if ("patch_size" in changes or "format" in changes) and "resize" not in changes \
                and self.resize == default_resize(self.format, self.patch_size):
            values["resize"] = None  # ... and so does a default resize
        return self.from_dict({**values, **changes})
