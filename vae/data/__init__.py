"""Data for aitexvae: AITEX and folder readers, patches with masks, splits, synthetic fabrics.

``load_splits(DataConfig(...))`` is the entry point: it returns train / val / test
``PatchSet``s (uint8 patches, bool masks, labels, metadata) and a ``DataSummary``; decoded
patches are cached per machine. ``generate_synthetic`` writes an AITEX-layout synthetic set;
``ensure_synthetic`` / ``default_synthetic_root`` give the embedded default that needs no
download. Pure Python/NumPy/Pillow: no Ray, no MLflow, no torch.
"""

from vae.data.config import DataConfig
from vae.data.defects import inject
from vae.data.errors import DataError, LayoutError
from vae.data.home import aitexvae_home, default_synthetic_root, ensure_synthetic
from vae.data.load import load_catalog, load_splits
from vae.data.patchset import PatchSet, StripInfo
from vae.data.splits import Splits
from vae.data.summary import DataSummary
from vae.data.synth import generate_synthetic

__all__ = ["DataConfig", "DataError", "DataSummary", "LayoutError", "PatchSet", "Splits",
           "StripInfo", "aitexvae_home", "default_synthetic_root", "ensure_synthetic",
           "generate_synthetic", "inject", "load_catalog", "load_splits"]
