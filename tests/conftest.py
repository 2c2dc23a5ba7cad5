"""Tests marked ``gpu`` need CUDA: where it is absent they are deselected (reported as such,
never counted as passed or skipped coverage)."""

from __future__ import annotations

import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    deselected = [item for item in items if item.get_closest_marker("gpu")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
