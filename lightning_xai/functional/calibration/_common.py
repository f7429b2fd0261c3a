"""What every step of the calibration state shares: its types, constants, the fields of the state and one rule.

Pure torch. :class:`_StateData` holds the fields of a :class:`~lightning_xai.functional.calibration.CalibrationState`
(documented there), which the binning and reservoir steps write; the readers that bin the waiting predictions
first (``bins``, ``counts``, ...) are defined on ``CalibrationState`` itself, above those steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__: list[str] = []

Task = Literal["binary", "multiclass", "multilabel"]
Input = Literal["auto", "logits", "probs"]
Norm = Literal["l1", "max", "l2"]

_TASKS = ("binary", "multiclass", "multilabel")
_INPUTS = ("auto", "logits", "probs")
_NORMS = ("l1", "max", "l2")
_F64 = torch.float64
_RESERVOIR_SALT = 0x5EED_CA1B  # mixed into `seed`: the reservoir never replays a user generator seeded alike
_PENDING_ROWS = 8192  # predictions an update buffers before binning them (160 KiB of float32 rows)


def _branch_on_values(x: Tensor) -> bool:
    """Whether Python may branch on values of ``x`` for free: on the CPU there is no device to wait for.

    Elsewhere an update makes no device sync: non-finite rows are zeroed and weighted out instead of removed,
    ``input="auto"`` decides with ``torch.where`` and the reservoir is cut by ``topk`` alone. Both paths give
    the same numbers. Every step asks this one function (tests switch it off to run the sync-free path).
    """
    return x.device.type == "cpu"


@dataclass(eq=False)
class _StateData:
    """The fields of a :class:`~lightning_xai.functional.calibration.CalibrationState` (see its docstring)."""

    n_bins: int
    table: Tensor = field(repr=False)  # what is binned; read through `bins`, which bins the waiting ones first
    nonfinite: Tensor
    class_bins: Tensor | None
    sample: Tensor = field(repr=False)
    pending: Tensor | None = field(default=None, repr=False)
    pending_fill: int = 0
    pending_dtype: torch.dtype | None = None
    pending_weighted: bool = False
    sample_fill: int = 0
    sample_pushed: int = 0
    sample_threshold: float = math.inf
    adaptive_sample: int = 0
    seed: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)
    num_classes: int | None = None
    task: str | None = None
    seen: int = 0
    input_mismatch: str | None = None
    cache: dict = field(default_factory=dict, repr=False)  # bin edges, per dtype

    @property
    def device(self) -> torch.device:
        """The device holding the state's tensors."""
        return self.table.device

    @property
    def per_class(self) -> bool:
        """Whether the state keeps one-vs-rest bins per class."""
        return self.class_bins is not None

    @property
    def class_counts(self) -> Tensor | None:
        """``(C, n_bins + 1)`` per-class predictions per bin (a view), or None."""
        return None if self.class_bins is None else self.class_bins[..., 0]


def _make_generator(device: torch.device, seed: int) -> torch.Generator:
    try:
        generator = torch.Generator(device=device)
    except RuntimeError:  # a device without its own generator: draw on the CPU and copy
        generator = torch.Generator()
    generator.manual_seed(seed ^ _RESERVOIR_SALT)
    return generator
