"""The rows of the expected-gradients engine: per-probe ``f`` values, the row store and row batches. Pure torch.

See :mod:`lightning_xai.functional.shap._engine` for the estimator these serve.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_xai.functional.shap._inputs import (
    FLOAT,
    TOKEN,
    Prepared,
    forward_rows,
    pass_through_groups,
    score_rows,
)

__all__: list[str] = []


@dataclass
class Settings:
    nsamples: int
    max_batch: int
    generator: torch.Generator
    completeness_tol: float | None
    max_nsamples: int
    sampling: str


def _relative(err: Tensor, fx: Tensor, base: Tensor) -> Tensor:
    """``|err| / |fx - base|``, guarded against a zero difference."""
    floor = torch.finfo(torch.float32).eps * (fx.abs() + base.abs()) + 1e-12
    return err.abs() / torch.maximum((fx - base).abs(), floor)


def _vdc(k: Tensor) -> Tensor:
    """Base-2 van der Corput radical inverse of non-negative integers (float64)."""
    out = torch.zeros(k.shape, dtype=torch.float64)
    k, scale = k.clone(), 0.5
    while bool((k > 0).any()):
        out += scale * (k & 1).double()
        k >>= 1
        scale /= 2
    return out


def forward_values(prep: Prepared, max_batch: int) -> tuple[Tensor, Tensor]:
    """``f(x_b)`` (B,) and ``f(x'_n)`` (B, N) for each probe's target and passed-through inputs (no grad)."""
    batch, n_bg = prep.batch, prep.n_background
    fx = torch.empty(batch, dtype=torch.float64)
    fbg = torch.empty(batch, n_bg, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, batch, max_batch):
            idx = torch.arange(start, min(batch, start + max_batch))
            fx[idx] = score_rows(forward_rows(prep, idx, None), prep.target, idx).double().cpu()
        for group in pass_through_groups(prep):
            for start in range(0, n_bg, max_batch):
                bg_idx = torch.arange(start, min(n_bg, start + max_batch))
                rep = torch.full_like(bg_idx, group[0])
                output = forward_rows(prep, rep, [bg[bg_idx] for bg in prep.bg])
                for b in group:
                    fbg[b, bg_idx] = (
                        score_rows(output, prep.target, torch.full_like(bg_idx, b)).double().cpu()
                    )
    return fx, fbg


def _explained_shapes(prep: Prepared) -> list[torch.Size]:
    roles = [role for role in prep.roles if role in (FLOAT, TOKEN)]
    return [x.shape[1:-1] if role == TOKEN else x.shape[1:] for x, role in zip(prep.x, roles)]


class _Store:
    """Attribution rows kept for re-weighting, up to ``budget`` bytes, in one buffer allocated at the first row
    (one allocation rather than one per chunk, so that kept rows do not fragment the heap between the model's
    activations; its pages are touched only as rows arrive). A row's slot is its index."""

    def __init__(self, shapes: list[torch.Size], device: torch.device, budget: int) -> None:
        self.shapes, self.device = shapes, device
        self.widths = [max(1, shape.numel()) for shape in shapes]
        self.capacity = budget // (4 * sum(self.widths))
        self.parts: list[Tensor] = []
        self.size = 0

    def _allocate(self) -> None:
        buffer = torch.empty(self.capacity * sum(self.widths), device=self.device)
        start = 0
        for width, shape in zip(self.widths, self.shapes):
            self.parts.append(buffer[start : start + self.capacity * width].view(self.capacity, *shape))
            start += self.capacity * width

    def add(self, rows: list[Tensor], keep: Tensor) -> Tensor:
        """Copy the ``keep`` rows of ``rows`` (one tensor per input) while there is room; their slots, -1 where
        not kept."""
        index = torch.nonzero(keep).flatten()
        room = max(0, min(len(index), self.capacity - self.size))
        slots = torch.full((len(index),), -1, dtype=torch.long)
        if room == 0:
            return slots
        if not self.parts:
            self._allocate()
        slots[:room] = torch.arange(self.size, self.size + room)
        part = index[:room]
        for stored, row in zip(self.parts, rows):
            torch.index_select(row, 0, part.to(row.device), out=stored[self.size : self.size + room])
        self.size += room
        return slots

    def subtract(self, acc: list[Tensor], slots: Tensor, probe: Tensor, amount: Tensor, chunk: int) -> None:
        """``acc[probe] -= amount * row`` for the stored rows at ``slots``, ``chunk`` rows at a time (the
        gathered rows are the only temporary)."""
        for start in range(0, len(slots), chunk):
            part = slice(start, start + chunk)
            index = slots[part].to(self.device)
            w = amount[part].to(device=self.device, dtype=torch.float32)
            for a, stored in zip(acc, self.parts):
                rows = stored[index].mul_(w.view(-1, *([1] * (stored.ndim - 1))))
                a.index_add_(0, probe[part].to(a.device), rows.to(a.device), alpha=-1.0)


@dataclass
class _Batch:
    """Rows to evaluate: local probe, baseline, ``a``, weight in the probe's estimate, whether to keep the row
    (a new sample point) or only add it (a re-evaluated point whose weight changes)."""

    probe: Tensor
    base: Tensor
    alpha: Tensor
    weight: Tensor
    keep: Tensor

    @staticmethod
    def cat(parts: list[_Batch]) -> _Batch:
        return _Batch(*(torch.cat([getattr(p, name) for p in parts]) for name in _Batch.__dataclass_fields__))


def _segment_cumsum(x: Tensor, segment: Tensor, start: Tensor) -> Tensor:
    """Inclusive cumulative sum of ``x`` within each run of equal ``segment`` (sorted), runs starting at
    ``start[segment]``."""
    c = torch.cumsum(x, 0)
    before = torch.where(start > 0, c[(start - 1).clamp_min(0)], torch.zeros_like(c[:1]).expand(len(start)))
    return c - before[segment]
