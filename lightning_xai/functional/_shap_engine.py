"""The expected-gradients estimator: sample plans, batched gradient rows, adaptive rounds. Pure torch.

Expected gradients, ``phi = E_{x' ~ background, a ~ U(0,1)} [(x - x') * grad f(x' + a (x - x'))]``, is an
average over *paths* ``(probe b, background point n)`` of a path integral whose exact value is known:
``f(x_b) - f(x'_n)``. The stratified scheme (the default) uses that structure:

* every background point is a baseline of every probe: no sampling error over the background at all (fewer
  baselines, drawn without replacement, only when ``nsamples`` is smaller than the background);
* along each path, ``t`` lies on a randomly shifted lattice ``{u + k / K}``, visited in van der Corput order
  so that the grid of ``K = 2^L`` points is the first half of the grid of ``2K`` (nested: refining reuses
  every gradient already taken); the shifts of one probe's paths are spread by the golden ratio, so that the
  lattices of different baselines interleave;
* the lattice is folded by the tent map ``a = 1 - |2t - 1|``, which pairs ``a`` with ``1 - a`` (antithetic
  pairs): the error on a smooth or strongly trending path falls from O(1/K) to O(1/K^2).
  ``sampling="lattice"`` keeps the unfolded lattice. Measured (median relative completeness error at equal
  points): the fold is 2-5x better on random-init ResNet-18 and on a BERT, up to ~2x worse on a small
  trained ReLU CNN with global max pooling (a rough integrand, where plain stratification is best);
* adaptive rounds: each path's quadrature error is known exactly (``f(x_b) - f(x'_n)`` minus its estimate),
  so a probe that misses the completeness tolerance doubles the lattice of its worse half of paths only.

``sampling="random"`` is plain Monte Carlo as in shap's ``GradientExplainer``: a random background point and
a random ``a`` per row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_xai.functional._shap_inputs import (
    FLOAT,
    TOKEN,
    Prepared,
    forward_rows,
    pass_through_groups,
    score_rows,
)

__all__: list[str] = []

SAMPLINGS = ("stratified", "antithetic", "lattice", "random")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_ACCUMULATOR_BYTES = 256 * 2**20  # per-path sums of one group of probes


@dataclass
class Settings:
    nsamples: int
    max_batch: int
    generator: torch.Generator
    completeness_tol: float | None
    max_nsamples: int
    sampling: str


def _vdc(k: Tensor) -> Tensor:
    """Base-2 van der Corput radical inverse of non-negative integers (float64)."""
    out = torch.zeros(k.shape, dtype=torch.float64)
    k, scale = k.clone(), 0.5
    while bool((k > 0).any()):
        out += scale * (k & 1).double()
        k >>= 1
        scale /= 2
    return out


def _ranges(start: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Row r of the expansion of ``count`` items per entry: (entry index, start + offset)."""
    entry = torch.repeat_interleave(torch.arange(len(count)), count)
    offset = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return entry, start[entry] + offset


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


def _accumulate(
    prep: Prepared,
    acc: list[Tensor],
    path: Tensor,
    probe: Tensor,
    base: Tensor,
    alpha: Tensor,
    max_batch: int,
) -> None:
    """Add ``(x_b - x'_n) * grad f(x'_n + a (x_b - x'_n))`` of every row to its path's sum (token inputs
    summed over the embedding dimension)."""
    token = [role for role in prep.roles if role in (FLOAT, TOKEN)]
    for start in range(0, len(path), max_batch):
        rows = slice(start, start + max_batch)
        pi, bi, al = probe[rows], base[rows], alpha[rows]
        points, deltas = [], []
        for x, bg in zip(prep.x, prep.bg):
            xb, bb = x[pi.to(x.device)], bg[bi.to(x.device)]
            delta = xb - bb
            a = al.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))
            points.append((bb + a * delta).requires_grad_(True))
            deltas.append(delta)
        scores = score_rows(forward_rows(prep, pi, points), prep.target, pi)
        if not scores.requires_grad:
            continue  # the target does not depend on the explained inputs: zero attributions
        grads = torch.autograd.grad(scores.sum(), points, allow_unused=True)
        for i, (delta, grad) in enumerate(zip(deltas, grads)):
            if grad is None:
                continue
            contribution = (delta * grad).float()
            if token[i] == TOKEN:
                contribution = contribution.sum(-1)
            acc[i].index_add_(0, path[rows].to(acc[i].device), contribution.to(acc[i].device))


def _relative(err: Tensor, fx: Tensor, base: Tensor) -> Tensor:
    floor = torch.finfo(torch.float32).eps * (fx.abs() + base.abs()) + 1e-12
    return err.abs() / torch.maximum((fx - base).abs(), floor)


class _Group:
    """A group of probes: per-path sums of ``(x - x') * grad`` (path = probe x background point; one path per
    probe for ``"random"``), the number of points on each path, and the next rows to evaluate (``request``:
    paths, index of their first new lattice point, how many)."""

    def __init__(self, prep: Prepared, probes: Tensor, s: Settings) -> None:
        self.prep, self.s, self.probes = prep, s, probes
        g, n_bg = len(probes), prep.n_background
        gen = s.generator
        self.random = s.sampling == "random"
        self.paths_per_probe = 1 if self.random else n_bg
        n_paths = g * self.paths_per_probe
        self.path_probe = probes.repeat_interleave(self.paths_per_probe)
        self.path_base = torch.arange(self.paths_per_probe).repeat(g)
        self.count = torch.zeros(n_paths, dtype=torch.long)
        shapes = [x.shape[1:-1] if role == TOKEN else x.shape[1:] for x, role in zip(prep.x, self._roles())]
        self.acc = [torch.zeros((n_paths, *shape), device=prep.x[0].device) for shape in shapes]
        if self.random:
            self.used = torch.ones(g, dtype=torch.long)
            self.request = (torch.arange(g), torch.zeros(g, dtype=torch.long), torch.full((g,), s.nsamples))
            return
        v = torch.rand(g, 1, generator=gen, dtype=torch.float64)
        self.shift = ((v + torch.arange(n_bg, dtype=torch.float64) * _GOLDEN) % 1.0).reshape(-1)
        self.order = torch.stack([torch.randperm(n_bg, generator=gen) for _ in range(g)])  # order of use
        m = min(s.nsamples, n_bg)
        k0 = 1 if s.nsamples <= n_bg else 2 ** math.ceil(math.log2(s.nsamples / n_bg))
        self.used = torch.full((g,), m, dtype=torch.long)
        first = (torch.arange(g)[:, None] * n_bg + self.order[:, :m]).reshape(-1)
        self.request = (first, torch.zeros_like(first), torch.full_like(first, k0))

    def _roles(self) -> list[str]:
        return [role for role in self.prep.roles if role in (FLOAT, TOKEN)]

    def run(self) -> None:
        paths, start, count = self.request
        entry, k = _ranges(start, count)
        path = paths[entry]
        if self.random:
            n_bg = self.prep.n_background
            base = torch.randint(0, n_bg, (len(path),), generator=self.s.generator)
            alpha = torch.rand(len(path), generator=self.s.generator, dtype=torch.float64)
        else:
            base = self.path_base[path]
            t = (self.shift[path] + _vdc(k)) % 1.0
            alpha = t if self.s.sampling == "lattice" else 1.0 - (2.0 * t - 1.0).abs()  # tent fold
        _accumulate(self.prep, self.acc, path, self.path_probe[path], base, alpha, self.s.max_batch)
        self.count.index_add_(0, paths, count)

    def path_totals(self) -> Tensor:
        """Per-path estimate of the path integral's total (sum over all features), float64."""
        total = sum(a.flatten(1).sum(1).double().cpu() for a in self.acc)
        return torch.where(self.count > 0, total / self.count.clamp_min(1), torch.zeros_like(total))

    def values(self) -> list[Tensor]:
        """Per-probe attributions: the mean over the probe's baselines in use of each path's mean."""
        g, per = len(self.probes), self.paths_per_probe
        weight = (self.count > 0).float() / (
            self.count.clamp_min(1) * self.used.repeat_interleave(per)
        ).float()
        out = []
        for a in self.acc:
            w = weight.to(a.device).view(-1, *([1] * (a.ndim - 1)))
            out.append((a * w).reshape(g, per, *a.shape[1:]).sum(1))
        return out

    def points(self) -> Tensor:
        return self.count.reshape(len(self.probes), self.paths_per_probe).sum(1)

    def plan(self, unconverged: Tensor, fx: Tensor, fbg: Tensor) -> bool:
        """Plan the next rows for the unconverged probes (local indices); False if nothing is left to add."""
        budget = self.s.max_nsamples - self.points()
        totals = self.path_totals()
        per = self.paths_per_probe
        chosen: list[tuple[Tensor, Tensor, Tensor]] = []  # (paths, first new lattice index, how many)
        for i in torch.nonzero(unconverged & (budget > 0)).flatten().tolist():
            lo, left = i * per, int(budget[i])
            if self.random:  # double the probe's sample count
                add = torch.tensor([min(int(self.count[lo]), left)])
                chosen.append((torch.tensor([lo]), self.count[lo : lo + 1], add))
            elif self.used[i] < per:  # first bring in more of the background, one point each
                m = int(self.used[i])
                new = self.order[i, m : m + min(m, per - m, left)]
                self.used[i] += len(new)
                chosen.append((lo + new, torch.zeros_like(new), torch.ones_like(new)))
            else:  # double the lattice of the worse half of the probe's paths, by their exact errors
                b = int(self.probes[i])
                err = (fx[b] - fbg[b] - totals[lo : lo + per]).abs()
                worst = torch.argsort(err, descending=True)
                worst = worst[err[worst] >= err.median()]
                worst = worst[torch.cumsum(self.count[lo + worst], 0) <= left]
                if len(worst):
                    chosen.append((lo + worst, self.count[lo + worst], self.count[lo + worst]))
        if not chosen:
            return False
        paths, starts, counts = (torch.cat(parts) for parts in zip(*chosen))
        self.request = (paths, starts, counts)
        return True


def estimate(prep: Prepared, s: Settings) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
    """Attributions of the explained inputs, points per probe, ``f(x)`` and ``f(background)`` per probe."""
    fx, fbg = forward_values(prep, s.max_batch)
    base = fbg.mean(1)
    per_probe = sum(
        (x.shape[1:-1] if role == TOKEN else x.shape[1:]).numel()
        for x, role in zip(prep.x, [r for r in prep.roles if r in (FLOAT, TOKEN)])
    )
    per_path = 4 * max(1, per_probe) * (1 if s.sampling == "random" else prep.n_background)
    group_size = max(1, _ACCUMULATOR_BYTES // per_path)
    values: list[list[Tensor]] = [[] for _ in prep.x]
    points = []
    for start in range(0, prep.batch, group_size):
        probes = torch.arange(start, min(prep.batch, start + group_size))
        group = _Group(prep, probes, s)
        while True:
            group.run()
            if s.completeness_tol is None:
                break
            phi_total = sum(v.flatten(1).sum(1).double().cpu() for v in group.values())
            rel = _relative(fx[probes] - base[probes] - phi_total, fx[probes], base[probes])
            if not group.plan(rel > s.completeness_tol, fx, fbg):
                break
        for i, v in enumerate(group.values()):
            values[i].append(v)
        points.append(group.points())
    return [torch.cat(v) for v in values], torch.cat(points), fx, fbg
