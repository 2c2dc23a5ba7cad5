"""Errors raised for data that cannot be used as given; each message names the file(s) involved."""

from __future__ import annotations


class DataError(ValueError):
    """The data set cannot be read as asked (e.g. a mask whose size differs from its image)."""


class LayoutError(DataError):
    """The data root is missing or is not laid out as the chosen format expects."""


AITEX_LAYOUT = """expected the AITEX layout:
  ROOT/Defect_images/nnnn_ddd_ff.png              defective strips (ddd defect code, ff fabric)
  ROOT/NODefect_images/<roll folder>/nnnn_000_ff.png   defect-free strips
  ROOT/Mask_images/nnnn_ddd_ff_mask.png           white = defect (_mask1, _mask2: union)"""

FOLDER_LAYOUT = """expected a folder (MVTec-style) layout:
  ROOT/train/good/*.png                  defect-free images (train/validation)
  ROOT/test/good/*.png                   defect-free test images (optional)
  ROOT/test/<defect type>/*.png          defective images
  ROOT/ground_truth/<defect type>/<name>_mask.png   white = defect"""
