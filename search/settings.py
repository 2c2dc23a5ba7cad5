"""``SearchSettings``: everything ``aitexvae tune`` takes, typed, frozen and validated in one place.

The settings are saved beside the experiment (``aitexvae_search.json``) so that
``--resume NAME`` continues with exactly the data, space and budget of the original search.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.objective import CHOICES as OBJECTIVE_CHOICES
from tracking.settings import check_search_name
from vae.config import ConfigError, check_image_size
from vae.data.config import SMALL_SYNTHETIC_HEIGHT, DataConfig, default_format

SCHEDULERS = ("asha", "fifo")
SEARCH_ALGORITHMS = ("random", "optuna")
SETTINGS_FILE = "aitexvae_search.json"
# The embedded default (synthetic data, this 2-core CPU): >= 8 trials in a few minutes.
SYNTHETIC_DEFAULTS = {"image_size": 64, "num_samples": 12, "max_epochs": 12}
# Real data on 2 CPU cores: 8 trials x up to 8 epochs under ASHA took 28 minutes on the AITEX
# dev split (bench/real_quality.py; the old 20 x 30 would take hours there).
REAL_DEFAULTS = {"image_size": 256, "num_samples": 8, "max_epochs": 8}
# Flags that may change on --resume (where and how to run, not what to search).
# ASHA's default grace period as a share of max_epochs. Early val/auroc says little about the
# final one here: on the synthetic set (16 trials x 12 epochs, bench/asha_vs_fifo.py --dump) the
# Spearman correlation of epoch-k val/auroc with a trial's best was -0.39, 0.05, 0.13 for k = 1-3,
# 0.52 at 4 and 0.87 at 6 (VAEs often sit on a plateau for a few epochs, then take off).
GRACE_FRACTION = 0.25
# What a search saved before these fields existed did: native resolution, ranked by val/auroc.
SAVED_BEFORE_FIELD = {"resize": 0, "objective": "synthetic", "val_defects": "builtin"}
DATA_FLAGS = {"format": "--format", "root": "--data-root", "train_stride": "--train-stride", "resize": "--resize",
              "val_defects": "--val-defects"}
RUNTIME_FIELDS = ("address", "storage_path", "tracking", "tracking_uri", "experiment", "verbose")


def _flag_of(error: ConfigError) -> str:
    """``"--resize: "`` for an error about ``data.resize``: the flag the user typed."""
    for key, flag in DATA_FLAGS.items():
        if str(error).startswith((f"data.{key}=", f"data.{key} ")):
            return f"{flag}: "
    return ""


def _positive_int(name: str, value: object, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"--{name.replace('_', '-')}={value!r} is invalid; allowed: an "
                          f"integer >= {low}")


def _number(name: str, value: object, low: float, *, strict: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or (value <= low if strict else value < low):
        raise ConfigError(f"--{name.replace('_', '-')}={value!r} is invalid; allowed: a number "
                          f"{'>' if strict else '>='} {low}")


def default_name() -> str:
    return time.strftime("tune-%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class SearchSettings:
    """One search: data, budget, scheduler, search algorithm, resources, storage, tracking.

    ``None`` for ``image_size``, ``num_samples`` and ``max_epochs`` means "the default for the
    data": small and quick on the synthetic set, 256x256 on real data.
    """

    name: str | None = None
    data_root: str | None = None  # None: the embedded synthetic set (generated on first use)
    data_format: str | None = None  # None: vae.data.config.default_format(data_root)
    image_size: int | None = None
    num_samples: int | None = None
    max_epochs: int | None = None
    train_patches: int = 0  # > 0: train on a seeded random subset of this many patches
    train_stride: int | None = None  # None: the patch size (data.train_stride validates it)
    resize: int | None = None  # None: the format's default (data.resize validates it)
    objective: str = "auto"  # search.objective.CHOICES; resolved against the data in prepare
    val_defects: str = "builtin"  # data.val_defects validates it
    scheduler: str = "asha"
    grace_period: int | None = None  # None: a quarter of max_epochs (see GRACE_FRACTION)
    reduction_factor: float = 2.0
    search_alg: str = "random"
    space_file: str | None = None
    seed: int = 0
    max_concurrent_trials: int = 0  # 0: as many as the resources allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: 1 on a cluster with GPUs, else 0
    max_failures: int = 2
    keep_checkpoints: int = 2
    address: str | None = None  # None: start a local Ray; "auto" or host:port: join a cluster
    storage_path: str = "ray_results"
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str | None = None
    verbose: int = 1

    def __post_init__(self) -> None:
        # data.format's values, its default and "a real format needs its root" are DataConfig's
        # (checked by data_config() below); that the generated set takes no root is this
        # command's own rule (`data synth` output is read back as --format aitex).
        if self.data_format is None:
            object.__setattr__(self, "data_format", default_format(self.data_root))
        if self.data_format == "synthetic" and self.data_root is not None:
            raise ConfigError(f"--data-root={self.data_root!r} with the synthetic set: the "
                              "synthetic set is generated, not read; for a folder written by "
                              "`aitexvae data synth` use --format aitex")
        defaults = SYNTHETIC_DEFAULTS if self.synthetic else REAL_DEFAULTS
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)  # resolve once, stay frozen
        check_image_size("--image-size", self.image_size)  # the model's rule, named as a flag
        _positive_int("num_samples", self.num_samples)
        _positive_int("max_epochs", self.max_epochs)
        _positive_int("train_patches", self.train_patches, 0)
        if self.objective not in OBJECTIVE_CHOICES:
            raise ConfigError(f"--objective={self.objective!r} is invalid; choose one of "
                              f"{list(OBJECTIVE_CHOICES)}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler={self.scheduler!r} is invalid; choose one of "
                              f"{list(SCHEDULERS)}")
        if self.grace_period is None:
            object.__setattr__(self, "grace_period", max(1, int(self.max_epochs * GRACE_FRACTION)))
        _positive_int("grace_period", self.grace_period)
        if self.scheduler == "asha" and self.grace_period > self.max_epochs:
            raise ConfigError(f"--grace-period={self.grace_period} exceeds --max-epochs="
                              f"{self.max_epochs}; ASHA would never stop a trial early")
        _number("reduction_factor", self.reduction_factor, 1.0, strict=True)
        if self.search_alg not in SEARCH_ALGORITHMS:
            raise ConfigError(f"--search-alg={self.search_alg!r} is invalid; choose one of "
                              f"{list(SEARCH_ALGORITHMS)}")
        _positive_int("seed", self.seed, 0)
        _positive_int("max_concurrent_trials", self.max_concurrent_trials, 0)
        _number("cpus_per_trial", self.cpus_per_trial, 0.0, strict=True)
        if self.gpus_per_trial is not None:
            _number("gpus_per_trial", self.gpus_per_trial, 0.0, strict=False)
            if self.gpus_per_trial > 1:  # a trial trains on one device (no DDP here)
                raise ConfigError(f"--gpus-per-trial={self.gpus_per_trial} is invalid: a trial "
                                  "trains on one GPU; use 1, or a fraction (e.g. 0.25) to share "
                                  "one between trials")
        _positive_int("max_failures", self.max_failures, 0)
        _positive_int("keep_checkpoints", self.keep_checkpoints)
        if self.name is not None:
            try:  # tracking owns the rule (MLflow filters); checked here, before Ray starts
                check_search_name(self.name, "--name")
            except ValueError as error:
                raise ConfigError(str(error)) from None
        if self.space_file is not None and not Path(self.space_file).is_file():
            raise ConfigError(f"--space={self.space_file!r}: no such file")
        try:
            self.data_config()  # DataConfig owns the rules of --train-stride, --resize, ...
        except ConfigError as error:
            raise ConfigError(f"{_flag_of(error)}{error}") from None

    # -- derived -------------------------------------------------------------------------------
    @property
    def synthetic(self) -> bool:
        return self.data_format == "synthetic"

    def data_config(self) -> DataConfig:
        """Patches of ``image_size`` (the model's input size) from the chosen data set."""
        if self.synthetic:
            full = self.image_size > SMALL_SYNTHETIC_HEIGHT  # the small set's strips are 64 high
            return DataConfig(format="synthetic", patch_size=self.image_size, synthetic_full=full,
                              train_stride=self.train_stride, resize=self.resize,
                              val_defects=self.val_defects)
        root = str(Path(self.data_root).expanduser()) if self.data_root else None
        return DataConfig(format=self.data_format, root=root,
                          patch_size=self.image_size, train_stride=self.train_stride,
                          resize=self.resize, val_defects=self.val_defects)

    def base_config(self, in_channels: int = 1) -> dict[str, Any]:
        """Config keys every trial shares (Ray's ``param_space``; the space fills the rest)."""
        return {"model.image_size": self.image_size, "model.in_channels": in_channels,
                "model.input_resize": self.data_config().resize,
                "train.num_epochs": self.max_epochs, "train.seed": self.seed}

    def resolved(self) -> SearchSettings:
        """A name (default: a timestamp) and absolute paths, as saved beside the experiment."""
        space = str(Path(self.space_file).resolve()) if self.space_file else None
        root = str(Path(self.data_root).expanduser().resolve()) if self.data_root else None
        return dataclasses.replace(self, name=self.name or default_name(), space_file=space,
                                   data_root=root, storage_path=self.storage_uri())

    def storage_uri(self) -> str:
        """Absolute local path or a URI (``s3://``, ``gs://``, ``file://``) as given."""
        if "://" in self.storage_path:
            return self.storage_path
        return str(Path(self.storage_path).expanduser().resolve())

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown search setting(s) {unknown}; valid: {sorted(names)}")
        # Settings saved before a field existed resume as that search ran, not with today's
        # defaults (a folder set resized, trials ranked by another objective mid-search).
        return cls(**{**SAVED_BEFORE_FIELD, **data})

    def for_resume(self, runtime: Mapping[str, Any]) -> SearchSettings:
        """These (saved) settings with only the runtime fields replaced."""
        changes = {k: v for k, v in runtime.items() if k in RUNTIME_FIELDS}
        return dataclasses.replace(self, **changes)
