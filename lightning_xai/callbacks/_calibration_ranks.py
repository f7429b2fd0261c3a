"""CalibrationCallback across DDP ranks: each rank's bins, reservoir sample, kept logits and gallery mistakes are
gathered to rank zero and combined there, so the metrics, ACE, the temperature and the gallery cover every rank's
share of the data (an all-reduce of the bins alone left ACE, the temperature and the gallery to rank zero's share).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lightning_xai.functional.calibration import CalibrationState, calibration_merge, portable_state

__all__ = ["RankPart", "gather_parts", "merge_states"]


@dataclass
class RankPart:
    """What one rank saw in an epoch: its calibration state (CPU, no generator), its gallery's mistakes and the
    logits and labels it kept for temperature scaling."""

    state: CalibrationState | None
    mistakes: list[Any] = field(default_factory=list)
    logits: Tensor | None = None
    labels: Tensor | None = None

    @classmethod
    def of(cls, state: CalibrationState | None, mistakes: list[Any], logits: list[Tensor],
           labels: list[Tensor]) -> RankPart:
        return cls(None if state is None else portable_state(state), list(mistakes),
                   torch.cat(logits) if logits else None, torch.cat(labels) if labels else None)


def gather_parts(part: RankPart) -> list[RankPart]:
    """Every rank's part, in rank order, on every rank (collective)."""
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return parts


def merge_states(own: CalibrationState | None, parts: list[RankPart], rank: int) -> CalibrationState | None:
    """``own`` (this rank's state, on its device) merged with the other ranks' states."""
    merged = own
    for i, part in enumerate(parts):
        if i == rank or part.state is None:
            continue
        merged = part.state if merged is None else calibration_merge(merged, part.state)
    return merged
