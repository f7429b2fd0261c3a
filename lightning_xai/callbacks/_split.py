"""The probe split across distributed ranks: each rank explains its consecutive share of the probe, the parts are
gathered to rank zero and joined there into the explanation of the whole probe, in probe order (the other ranks keep
their own part: only rank zero writes, and the work on whole explanations -- faithfulness, stability, comparisons
-- runs there; gathering every part to every rank cost each rank the whole probe's maps and inputs).

Only explainers that say so (``Explainer.splits_on(device)``: a sample's explanation does not depend on the rest
of the batch) are split; the others explain the whole probe on every rank, as before. A probe smaller than the world is
not split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from torch import Tensor, nn

from lightning_xai._inputs import Scorer
from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers import Explainer, Explanation
from lightning_xai.explainers._rows import concat_explanations, row_ranges, take_rows

__all__ = ["ProbeSplit", "explain_split"]


@dataclass(frozen=True)
class ProbeSplit:
    """This rank's place among ``world`` ranks (``world == 1``: no split).

    Example:
        >>> ProbeSplit(1, 2).rows(5)
        (3, 5)
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls, world_size: int, rank: int) -> ProbeSplit:
        """The split of a trainer's ranks, when a process group is up (else no split)."""
        if world_size > 1 and dist.is_available() and dist.is_initialized():
            return cls(rank, world_size)
        return cls()

    def applies(self, explainer: Explainer, inputs: ModelInputs) -> bool:
        if self.world <= 1 or inputs.batch_size < self.world:
            return False
        device = next(t.device for t in (*inputs.args, *inputs.kwargs.values()) if isinstance(t, Tensor))
        return explainer.splits_on(device)

    def rows(self, n: int) -> tuple[int, int]:
        return row_ranges(n, self.world)[self.rank]

    @property
    def writer(self) -> bool:
        """Whether this rank holds whole explanations (rank zero; every process when there is no split)."""
        return self.rank == 0


def explain_split(split: ProbeSplit, explainer: Explainer, model: nn.Module, inputs: ModelInputs, target: Any,
                  scorer: Scorer | None) -> Explanation:
    """``explainer.explain(model, inputs, target, scorer)``, with this rank explaining only its share when the
    split applies; collective then (every rank must call it with the same explainer and probe). Rank zero gets the
    explanation of the whole probe, another rank the explanation of its own share."""
    if not split.applies(explainer, inputs):
        return explainer.explain(model, inputs, target, scorer)
    start, stop = split.rows(inputs.batch_size)
    if isinstance(target, Tensor) and target.dim() > 0:
        target = target[start:stop]
    try:
        part: Any = explainer.explain(model, take_rows(inputs, start, stop), target, scorer)
    except Exception as err:  # every rank must reach the gather, or the others wait forever
        part = _Failed(f"{type(err).__name__}: {err}", start, stop)
        failure: Exception | None = err
    else:
        failure = None
    states: list[Any] = [None] * split.world  # first the small news: did any rank fail? (every rank raises)
    dist.all_gather_object(states, part if isinstance(part, _Failed) else None)
    failed = [(rank, p) for rank, p in enumerate(states) if isinstance(p, _Failed)]
    if failed:
        rank, p = failed[0]
        raise RuntimeError(f"lightning_xai: rank {rank} failed to explain rows {p.start}..{p.stop - 1} of the probe "
                           f"({explainer.name}; sample positions in this message count from {p.start}): "
                           f"{p.message}") from failure
    parts: list[Any] | None = [None] * split.world if split.rank == 0 else None
    dist.gather_object(part, parts, dst=0)
    return concat_explanations(parts) if parts is not None else part


@dataclass(frozen=True)
class _Failed:
    """What a rank whose share failed sends instead of its explanation: the error and the rows it held."""

    message: str
    start: int
    stop: int

