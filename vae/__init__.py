"""aitexvae's pure-PyTorch core: config, model, posteriors, losses, data, training, scoring.

``vae.save(model, dir)`` and ``vae.load(dir)`` are the stable entry points for downstream users.
Nothing here imports Ray or MLflow.
"""

from vae.config import ConfigError, VAEConfig

__all__ = ["ConfigError", "VAEConfig", "load", "save"]


def __getattr__(name: str):
    # Lazy so that `import vae.config` stays light (no torch) for the CLI and config checks.
    if name in ("save", "load"):
        from vae import io

        return getattr(io, name)
    raise AttributeError(f"module 'vae' has no attribute {name!r}")
