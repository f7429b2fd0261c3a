"""Integrated gradients to a completeness tolerance: the expected-gradients engine's adaptive cells on one path per
probe. Pure torch.

Integrated gradients is expected gradients with a single baseline per probe: ``phi = (x - x') * int_0^1 grad
f(x' + a (x - x')) da`` along the straight path from the probe's own baseline ``x'`` to ``x``. The path is cut
into cells, each holding one point at its centre weighted by the cell's length (the midpoint rule, which is
second order on a smooth path). The first round is a lattice of ``n_start`` equal cells. Every gradient row also
gives ``f`` at its point and ``f(x')``, ``f(x)`` are known, so the completeness error of the path splits exactly
into the discrepancies of the segments between consecutive points; a probe above the tolerance splits the cells
that carry the largest of them (:class:`~lightning_xai.functional.shap._cells.CellSplitting`, the SHAP engine's
ranking), as many as carry its *excess* error ``|f(x) - f(x') - sum(phi)| - tol |f(x) - f(x')|``: at least one,
at most a quarter of its cells per round. A probe just above the tolerance thus adds one cell (two rows) and is
judged again; one far from it splits more. Measured against the SHAP engine's count (the fewest cells carrying
30% of the discrepancy) on the probes of ``benchmarks/attribution.py`` (1% tolerance, every probe converged),
rows per probe: trained ResNet-18 at 112 px (16 probes) 21.1 instead of 33.3, 2-layer BERT 18.4 instead of
19.6, ShapesCNN 18.5 instead of 24.1. The rough paths of a ReLU network (the error at 1% is a sum of many
discrepancies of both signs) and the step-like paths of a transformer both stop as soon as the error dips under
the tolerance, rather than after a batch of splits it did not need. A split *trisects* a cell: its old point
stays at the centre of the middle third and two new points sit at the centres of the outer thirds, so every cell
keeps its point in the middle and the rule stays deterministic (no random numbers at all). The old point's weight
falls to a third: its row is taken from the engine's row store (64 MiB), or evaluated once more where the store is
full (counted in the probe's steps).

Rounds go on until every probe's relative completeness error is at most the tolerance or the probe has spent
``max_steps`` gradient rows (``stop="median"``: until the median probe's is), the caller reports which probes did
not converge. Rows of all probes are evaluated
together in chunks of ``max_batch``. Off the CPU a round's last part chunk is topped up with the next cells of its
probes (the SHAP engine's rule: there a chunk costs about the same whatever its rows); on the CPU it is not, as a
forward+backward's cost grows with its rows (one thread: ResNet-18 at 112 px 48 ms per row in chunks of 2, 42 in
chunks of 64), and the top-up cost the ResNet-18 above 64.6 rows per probe instead of 33.3. Nothing rescales the
attributions toward completeness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_xai.functional.shap._engine import _ACCUMULATOR_BYTES, _STORE_BYTES, _Group
from lightning_xai.functional.shap._rows import _relative
from lightning_xai.functional.shap._rows import Settings, _Batch, _Store

__all__: list[str] = []

N_START = 8  # equal cells of the first round (captum ladder's first rung)


@dataclass
class Paths:
    """What the rows need: ``module(*points, *rows)`` scores ``(B, C)`` (or ``(B,)`` for ``target=None``), the
    explained tensors, their baselines (both ``(B, ...)``), the pass-through rows and the class per probe."""

    module: Callable[..., Any]
    x: tuple[Tensor, ...]
    baselines: tuple[Tensor, ...]
    rows: tuple[Tensor, ...]
    target: Tensor | None
    n_background: int = 1  # one path per probe (read by the cell splitting)

    def scores(self, points: tuple[Tensor, ...], probe: Tensor) -> Tensor:
        """``(len(probe),)`` target scores at ``points`` (rows of probes ``probe``)."""
        index = probe.to(self.x[0].device)
        out = self.module(*points, *[r[index] for r in self.rows])
        if self.target is None:
            return out.reshape(-1)
        return out.gather(1, self.target[index].reshape(-1, 1))[:, 0]


class _PathGroup(_Group):
    """A group of probes, one path each: per-probe sums of weighted ``(x - x') * grad`` rows, and per kept row its
    point ``a``, its cell ``[lo, hi)`` (``a`` at its centre), ``f`` at the point and its summed attributions."""

    split_rows = 2  # a trisection adds two points

    def __init__(self, paths: Paths, probes: Tensor, s: Settings, fx: Tensor, fbg: Tensor, n_start: int) -> None:
        self.prep = paths  # type: ignore[assignment]  # the cell splitting reads only ``n_background``
        self.paths, self.s, self.probes = paths, s, probes
        self.fx, self.fbg = fx[probes], fbg[probes].view(-1, 1)
        g = len(probes)
        self.random, self.refines = False, True
        shapes = [x.shape[1:] for x in paths.x]
        device = paths.x[0].device
        self.acc = [torch.zeros((g, *shape), device=device) for shape in shapes]
        self.store = _Store(shapes, device, _STORE_BYTES)
        self.points = torch.zeros(g, dtype=torch.long)
        empty_f, empty_l = torch.empty(0, dtype=torch.float64), torch.empty(0, dtype=torch.long)
        self.probe, self.base, self.a, self.f, self.sum = empty_l, empty_l, empty_f, empty_f, empty_f
        self.lo, self.hi, self.slot = empty_f, empty_f, empty_l
        self.used = torch.ones(g, dtype=torch.long)  # baselines per probe: its one path
        self.excess = torch.zeros(g, dtype=torch.float64)  # |error| - tol |f(x) - f(x')|, set before each plan
        probe = torch.arange(g).repeat_interleave(n_start)
        cell = torch.arange(n_start, dtype=torch.float64).repeat(g)
        alpha = (cell + 0.5) / n_start
        weight = torch.full_like(alpha, 1.0 / n_start)
        self.pending = _Batch(probe, torch.zeros_like(probe), alpha, weight, torch.ones_like(probe, dtype=torch.bool))
        self.pending_cells = (cell / n_start, (cell + 1) / n_start)

    def _accumulate(
        self, probe: Tensor, base: Tensor, alpha: Tensor, weight: Tensor, keep: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One chunk: add ``weight * (x_b - x'_b) * grad f(x'_b + a (x_b - x'_b))`` to each row's probe sum.
        Returns ``f`` and the summed attributions of every row (float64, CPU), and the store slots of the kept
        rows (-1 where the store is full)."""
        paths = self.paths
        global_probe = self.probes[probe]
        index = global_probe.to(paths.x[0].device)
        points, deltas = [], []
        for x, b in zip(paths.x, paths.baselines):
            xb, bb = x[index], b[index]
            a = alpha.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))
            points.append(torch.lerp(bb, xb, a).requires_grad_(True))
            deltas.append(xb.sub_(bb))
        scores = paths.scores(tuple(points), global_probe)
        f = scores.detach().double().cpu()
        grads: tuple[Tensor | None, ...] = (None,) * len(points)
        if scores.requires_grad:  # else the target does not depend on the explained inputs: zero rows
            grads = torch.autograd.grad(scores.sum(), points, allow_unused=True)
        total = torch.zeros(len(probe), dtype=torch.float64)
        contributions = []
        for acc, delta, grad in zip(self.acc, deltas, grads):
            if grad is None:
                contribution = torch.zeros((len(probe), *acc.shape[1:]), device=acc.device)
            else:
                contribution = (delta * grad).float()
            total += contribution.flatten(1).sum(1).double().cpu()
            contributions.append(contribution)
        slots = self.store.add(contributions, keep)
        w = weight.to(device=self.acc[0].device, dtype=torch.float32)
        for acc, contribution in zip(self.acc, contributions):
            contribution.mul_(w.view(-1, *([1] * (contribution.ndim - 1))))
            acc.index_add_(0, probe.to(acc.device), contribution)
        return f, total, slots

    def _split_mass(self, total: Tensor) -> Tensor:
        """Per probe, the discrepancy its split cells should carry: its excess error over the tolerance (at least
        one cell is split). A probe just above the tolerance splits one cell, a probe far from it more."""
        return torch.minimum(self.excess, total)

    def _split(self, chosen: Tensor) -> tuple[_Batch, tuple[Tensor, Tensor]]:
        """Trisect each chosen cell: its point keeps the middle third, new points at the centres of the others."""
        lo, hi, a = self.lo[chosen], self.hi[chosen], self.a[chosen]
        third = (hi - lo) / 3.0
        self.lo[chosen], self.hi[chosen] = lo + third, hi - third
        probe = self.probe[chosen]
        stored = self.slot[chosen] >= 0
        # the old point's weight falls from 3 thirds to 1: subtract two thirds of its row
        self.store.subtract(self.acc, self.slot[chosen[stored]], probe[stored], 2.0 * third[stored], self.s.max_batch)
        again = ~stored
        n, n_again = len(chosen), int(again.sum())
        batch = _Batch(
            torch.cat([probe, probe, probe[again]]),
            torch.zeros(2 * n + n_again, dtype=torch.long),
            torch.cat([lo + 0.5 * third, hi - 0.5 * third, a[again]]),
            torch.cat([third, third, -2.0 * third[again]]),
            torch.cat([torch.ones(2 * n, dtype=torch.bool), torch.zeros(n_again, dtype=torch.bool)]),
        )
        return batch, (torch.cat([lo, hi - third]), torch.cat([lo + third, hi]))


def end_values(paths: Paths, max_batch: int) -> tuple[Tensor, Tensor]:
    """``f(x)`` and ``f(x')`` per probe (float64, CPU), ``max_batch`` probes per forward."""
    batch = paths.x[0].shape[0]
    fx = torch.empty(batch, dtype=torch.float64)
    fb = torch.empty(batch, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, batch, max_batch):
            idx = torch.arange(start, min(batch, start + max_batch))
            sel = idx.to(paths.x[0].device)
            fx[idx] = paths.scores(tuple(x[sel] for x in paths.x), idx).double().cpu()
            fb[idx] = paths.scores(tuple(b[sel] for b in paths.baselines), idx).double().cpu()
    return fx, fb


def integrate_to_tolerance(
    paths: Paths, completeness_tol: float, max_steps: int, max_batch: int, n_start: int = N_START,
    stop: str = "every",
) -> tuple[tuple[Tensor, ...], Tensor, tuple[Tensor, Tensor]]:
    """Integrated gradients of every probe to ``completeness_tol`` (relative), at most ``max_steps`` rows each;
    ``stop="median"`` ends a group's rounds as soon as its median probe meets the tolerance.

    Returns:
        The attributions (float32, shaped like the explained tensors), the gradient rows spent per probe, and
        ``f(x)``, ``f(x')`` per probe (float64, CPU: the values the tolerance was judged on).
    """
    fx, fb = end_values(paths, max_batch)
    settings = Settings(n_start, max_batch, torch.Generator(), completeness_tol, max_steps, "lattice")
    per_probe = 4 * max(1, sum(x[0].numel() for x in paths.x))
    group_size = max(1, _ACCUMULATOR_BYTES // per_probe)
    values: list[list[Tensor]] = [[] for _ in paths.x]
    steps = []
    batch = paths.x[0].shape[0]
    for start in range(0, batch, group_size):
        probes = torch.arange(start, min(batch, start + group_size))
        group = _PathGroup(paths, probes, settings, fx, fb, min(n_start, max_steps))
        while True:
            group.run()
            total = sum(a.flatten(1).double().sum(1).cpu() for a in group.acc)  # the sums reported, not ideal ones
            gap = fx[probes] - fb[probes]
            rel = _relative(gap - total, fx[probes], fb[probes])
            group.excess = ((gap - total).abs() - completeness_tol * gap.abs()).clamp_min(0.0)
            if stop == "median" and float(rel.median()) <= completeness_tol:
                break
            if not group.plan(rel > completeness_tol):
                break
        for i, v in enumerate(group.values()):
            values[i].append(v)
        steps.append(group.points)
    return tuple(torch.cat(v) for v in values), torch.cat(steps), (fx, fb)
