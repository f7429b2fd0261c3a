"""Fixtures and pytest set-up only; the plain helpers are in tests/helpers.py (``from tests.helpers import ...``)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def shapes_dm() -> Any:
    from lightning_xai.datasets import SyntheticShapesDataModule

    return SyntheticShapesDataModule(batch_size=16, num_train=64, num_val=32, num_test=32, image_size=32)
