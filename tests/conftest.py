"""Fixtures and pytest set-up only; the plain helpers are in tests/helpers.py (``from tests.helpers import ...``)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# one torch thread per pytest-xdist worker (two workers on the 2-core CI machine: no oversubscription), else up to 2
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module", autouse=True)
def _deterministic_flags_restored_per_module() -> Any:
    """The same for module-scoped fixtures that train (tests/cli/test_cli_audit.py's checkpoints)."""
    on, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(on, warn_only=warn_only)


@pytest.fixture(autouse=True)
def _deterministic_flags_restored() -> Any:
    """``Trainer(deterministic=True)`` (tests.helpers.tiny_trainer) turns ``torch.use_deterministic_algorithms`` on
    and leaves it on: restore it after every test, so no test runs in another test's mode."""
    on, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(on, warn_only=warn_only)


@pytest.fixture
def shapes_dm() -> Any:
    from lightning_xai.datasets import SyntheticShapesDataModule

    return SyntheticShapesDataModule(batch_size=16, num_train=64, num_val=32, num_test=32, image_size=32)
