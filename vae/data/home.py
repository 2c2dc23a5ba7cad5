"""Where aitexvae keeps generated data and caches, and the embedded default data set.

Home: ``$AITEXVAE_HOME`` if set, else ``$XDG_CACHE_HOME/aitexvae``, else ``~/.cache/aitexvae``.
The default synthetic set lives in ``<home>/synthetic/aitex-<small|full>-seed<S>-v<V>``: it is
generated on first use and reused afterwards; a new generator version gets a new directory.
Generation writes into a temporary sibling directory and renames it into place, so two
processes that race both end up reading one complete set.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from vae.data.synth import GENERATOR_VERSION, MANIFEST, generate_synthetic

logger = logging.getLogger(__name__)


def aitexvae_home() -> Path:
    if os.environ.get("AITEXVAE_HOME"):
        return Path(os.environ["AITEXVAE_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "aitexvae"


def default_cache_dir() -> Path:
    return aitexvae_home() / "cache" / "patches"


def default_synthetic_root(full: bool = False, seed: int = 0) -> Path:
    name = f"aitex-{'full' if full else 'small'}-seed{seed}-v{GENERATOR_VERSION}"
    return aitexvae_home() / "synthetic" / name


def ensure_synthetic(full: bool = False, seed: int = 0, root: str | Path | None = None) -> Path:
    """The synthetic set at ``root`` (default: ``default_synthetic_root``), generated if absent.

    Idempotent: a complete set (its manifest exists) is returned as is.
    """
    target = Path(root) if root is not None else default_synthetic_root(full, seed)
    if (target / MANIFEST).is_file():
        return target
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{str(target)!r} exists but holds no complete synthetic set "
                              f"(no {MANIFEST}); remove it or choose another directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("generating the %s synthetic data set in %s (first use)",
                "full" if full else "small", target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        generate_synthetic(tmp / "set", full=full, seed=seed)
        if target.exists():
            target.rmdir()  # empty (checked above); rename needs the name free
        os.rename(tmp / "set", target)
    except OSError:
        if not (target / MANIFEST).is_file():  # not a lost race: a real failure
            raise
        logger.info("another process generated %s first; using it", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
