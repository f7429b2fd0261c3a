"""Adaptive refinement of the expected-gradients engine: which path cells to split, and the split. Pure torch.

A mixin of :class:`lightning_xai.functional.shap._engine._Group`; the scheme is described in that module.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.functional.shap._inputs import Prepared
from lightning_xai.functional.shap._rows import Settings, _Batch, _segment_cumsum, _Store

__all__: list[str] = []

_MASS = 0.3  # a round splits the fewest cells that carry this share of a probe's discrepancies...
_MAX_SPLIT = 0.25  # ...but at most this share of its cells
_MIN_CELL = 2.0**-40


class CellSplitting:
    """Planning by cell splits, for a group of probes that keeps, per row, its path (``probe``, ``base``), its
    point ``a``, its cell ``[lo, hi)``, ``f`` at the point and its summed attributions ``sum``, plus the
    per-probe ``fx``/``fbg``, baselines in ``used``, sums ``acc``, the row ``store`` and its settings ``s``."""

    prep: Prepared
    probes: Tensor
    probe: Tensor
    base: Tensor
    a: Tensor
    f: Tensor
    sum: Tensor
    lo: Tensor
    hi: Tensor
    slot: Tensor
    used: Tensor
    fx: Tensor
    fbg: Tensor
    acc: list[Tensor]
    store: _Store
    s: Settings
    gens: list[torch.Generator]  # one per probe of the group
    #: new points one split adds (a bisection: 1; the cell's old point stays)
    split_rows: int = 1

    def uniform(self, probe: Tensor) -> Tensor:
        """One uniform number per entry of ``probe`` (local indices), each from its probe's own generator."""
        out = torch.empty(len(probe), dtype=torch.float64)
        for p in torch.unique(probe).tolist():
            where = torch.nonzero(probe == p).flatten()
            out[where] = torch.rand(len(where), generator=self.gens[p], dtype=torch.float64)
        return out

    def _indicators(self, rows: Tensor) -> Tensor:
        """Per kept row (``rows``: a set of whole paths), the discrepancy its cell carries: the share of the
        exactly known error of each segment (between consecutive points of a path) that the cell covers."""
        path = self.probe[rows] * self.prep.n_background + self.base[rows]
        order = torch.argsort(path.double() * 2.0 + self.a[rows])
        idx = rows[order]
        p, a, lo, hi, f, s = path[order], self.a[idx], self.lo[idx], self.hi[idx], self.f[idx], self.sum[idx]
        first = torch.ones_like(p, dtype=torch.bool)
        first[1:] = p[1:] != p[:-1]
        last = torch.ones_like(p, dtype=torch.bool)
        last[:-1] = p[1:] != p[:-1]
        probe, base = self.probe[idx], self.base[idx]
        f_prev = torch.where(first, self.fbg[probe, base], torch.roll(f, 1))
        a_prev = torch.where(first, torch.zeros_like(a), torch.roll(a, 1))
        s_prev = torch.where(first, torch.zeros_like(s), torch.roll(s, 1))
        hi_prev = torch.where(first, torch.zeros_like(hi), torch.roll(hi, 1))
        # segment [a_prev, a]: the previous cell covers [a_prev, hi_prev), this cell [lo, a]
        gap = (a - a_prev).clamp_min(1e-300)
        d_before = (f - f_prev) - ((hi_prev - a_prev) * s_prev + (a - lo) * s)
        own = (d_before * (a - lo) / gap).abs()
        to_prev = (d_before * (hi_prev - a_prev) / gap).abs()
        to_prev = torch.roll(to_prev, -1)
        to_prev[last] = 0.0
        after = torch.where(last, (self.fx[probe] - f - (hi - a) * s).abs(), torch.zeros_like(a))
        out = torch.empty(len(rows), dtype=torch.float64)
        out[order] = own + to_prev + after
        return out

    def _split_cells(self, refine: Tensor, budget: Tensor) -> tuple[_Batch, tuple[Tensor, Tensor]] | None:
        """Split the cells with the largest discrepancies of each refined probe: per probe, its cells ranked by
        discrepancy, as many as its budget pays for (a stored cell costs ``split_rows`` new rows, another one more);
        of those, the fewest that carry ``_MASS`` of their discrepancies, at most ``_MAX_SPLIT`` of its cells."""
        rows = torch.nonzero(refine[self.probe]).flatten()
        if len(rows) == 0:
            return None
        ind = self._indicators(rows)
        ind[(self.hi[rows] - self.lo[rows]) < 2 * _MIN_CELL] = -1.0  # too small to split
        stored = self.slot[rows] >= 0
        # probes ascending, discrepancies descending within a probe (unsplittable cells last)
        order = torch.argsort(ind, descending=True, stable=True)
        order = order[torch.argsort(self.probe[rows][order], stable=True)]
        probe, values = self.probe[rows][order], ind[order]
        n = len(self.probes)
        mine = torch.bincount(probe, minlength=n)
        start = torch.cumsum(mine, 0) - mine
        valid = values >= 0
        cost = (self.split_rows + 1 - stored[order].long()) * valid
        eligible = valid & (_segment_cumsum(cost, probe, start) <= budget[probe])
        mass = torch.where(eligible, values, torch.zeros_like(values))
        total = torch.zeros(n, dtype=torch.float64).index_add_(0, probe, mass)
        within = eligible & (_segment_cumsum(mass, probe, start) < self._split_mass(total)[probe])
        count = torch.bincount(probe[eligible], minlength=n)
        k = torch.bincount(probe[within], minlength=n) + 1
        k = torch.minimum(torch.minimum(k, (_MAX_SPLIT * mine).long()), count).clamp_min(1)
        keep = count > 0
        if not bool(keep.any()):
            return None
        ranked = list(torch.split(order[eligible], count[keep].tolist()))
        wanted = self._fill_chunks(ranked, k[keep].tolist(), stored, rows)
        chosen = rows[torch.cat([r[:w] for r, w in zip(ranked, wanted)])]
        return self._split(chosen)

    def _split_mass(self, total: Tensor) -> Tensor:
        """Per probe, the discrepancy its split cells should carry, given the total its eligible cells carry."""
        return _MASS * total

    def _fill_chunks(
        self, ranked: list[Tensor], wanted: list[int], stored: Tensor, rows: Tensor
    ) -> list[int]:
        """Top the round up to whole chunks with the next cells of its probes, if that at most doubles it."""
        cost = [int((self.split_rows + 1 - stored[r[:k]].long()).sum()) for r, k in zip(ranked, wanted)]
        total = sum(cost)
        deficit = -total % self.s.max_batch
        if deficit == 0 or deficit > total:
            return wanted
        wanted = list(wanted)
        moved = True
        while deficit > 0 and moved:
            moved = False
            for j, r in enumerate(ranked):
                if deficit <= 0:
                    break
                if wanted[j] < len(r):
                    deficit -= int(self.split_rows + 1 - stored[r[wanted[j]]].long())
                    wanted[j] += 1
                    moved = True
        return wanted

    def _split(self, chosen: Tensor) -> tuple[_Batch, tuple[Tensor, Tensor]]:
        """The point of each chosen cell keeps the half it lies in; a new uniform point fills the other."""
        lo, hi, a = self.lo[chosen], self.hi[chosen], self.a[chosen]
        mid = 0.5 * (lo + hi)
        left = a < mid
        new_lo, new_hi = torch.where(left, mid, lo), torch.where(left, hi, mid)
        u = self.uniform(self.probe[chosen])
        new_a = new_lo + (new_hi - new_lo) * u
        self.lo[chosen], self.hi[chosen] = torch.where(left, lo, mid), torch.where(left, mid, hi)
        probe, base = self.probe[chosen], self.base[chosen]
        half = 0.5 * (hi - lo) / self.used[probe].double()
        # the old point's weight halves: subtract half of its row, from the store or by evaluating it again
        stored = self.slot[chosen] >= 0
        self.store.subtract(
            self.acc, self.slot[chosen[stored]], probe[stored], half[stored], self.s.max_batch
        )
        again = ~stored
        n_new, n_again = len(chosen), int(again.sum())
        batch = _Batch(
            torch.cat([probe, probe[again]]),
            torch.cat([base, base[again]]),
            torch.cat([new_a, a[again]]),
            torch.cat([half, -half[again]]),
            torch.cat([torch.ones(n_new, dtype=torch.bool), torch.zeros(n_again, dtype=torch.bool)]),
        )
        return batch, (new_lo, new_hi)
