"""Occlusion and feature ablation: captum's ``Occlusion`` and ``FeatureAblation`` (their definitions), our loop.

Every (perturbation, probe) pair is one row; ``max_batch`` rows are built at once (an element a perturbation covers
takes the baseline, :func:`fill`: bit for bit captum's ``x (1 - m) + b m`` for finite values) and scored in one
forward; ``f(x)`` and ``f(baseline)`` are two more rows per probe in the same batches. An element's attribution is
the drop ``f(x) - f(perturbed)`` of the one feature holding it (feature ablation; a feature id shared by several
inputs ablates them together, as captum does) or the mean drop over the windows covering it (occlusion; windows at
captum's positions, ``ceil((n - window) / stride) + 1`` per dim, the last clipped at the edge). A probe is not
perturbed by a feature it does not hold (captum runs the row and multiplies its drop by 0).

Why our loop: :func:`~lightning_xai.functional.attribution.attribute` ran captum's loop (its own ``f(x)`` forward,
perturbed copies by arithmetic on the expanded batch) plus forwards of ``f(x)`` and ``f(baseline)`` of its own: 1.12-
1.29x the floor of one batched forward per perturbation on a BERT explained at its word embeddings. Here ``f(x)`` is
scored once, inside the batches (``benchmarks/attribution.py --parts ablation`` times ours, captum's loop called
directly, and the floor: BERT 1.01-1.09x, 1.02-1.07x; the rest is this machine's noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_xai.functional.attribution._prepare import Prepared

__all__: list[str] = []

NONE, ALL = -1, -2  # the rows of f(x) (nothing perturbed) and f(baseline) (every explained element at its baseline)
Drop = Callable[[int, Tensor, Tensor], Tensor]  # (input position, feature per row, probe per row) -> bool mask


def cover(n: int, window: int, stride: int) -> Tensor:
    """``(n, c)``: is element ``e`` of a dim of size ``n`` inside window position ``j`` (captum's positions).

    Example:
        >>> cover(5, 2, 2).int().T.tolist()
        [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    """
    count = math.ceil((n - window) / stride) + 1
    start = torch.arange(count) * stride
    e = torch.arange(n)[:, None]
    return (e >= start) & (e < start + window)


def occlusion(prep: Prepared, baselines: tuple[Tensor, ...], target: Tensor | None,
              windows: tuple[tuple[int, ...], ...], strides: tuple[tuple[int, ...], ...],
              max_batch: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """Captum's ``Occlusion`` of every explained tensor: attributions, ``f(x)`` and ``f(baseline)`` per probe.

    Example:
        >>> from lightning_xai.functional.attribution._prepare import prepare
        >>> net, x = torch.nn.Linear(4, 1), torch.rand(2, 4)
        >>> prep = prepare(net, (x,), None, None, None, False)
        >>> values, fx, fb = occlusion(prep, (torch.zeros(2, 4),), torch.zeros(2, dtype=torch.long), ((2,),),
        ...                            ((2,),), 8)
        >>> bool(torch.allclose(values[0], (net.weight * x).view(2, 2, 2).sum(-1).repeat_interleave(2, 1)))
        True
    """
    device = prep.explained[0].device
    covers = [[cover(n, w, s).to(device) for n, w, s in zip(e.shape[1:], win, st)]
              for e, win, st in zip(prep.explained, windows, strides)]
    counts = [math.prod(c.shape[1] for c in per) for per in covers]
    offsets = [sum(counts[:i]) for i in range(len(counts))]
    batch = prep.explained[0].shape[0]
    whole = [[c.shape[1] == 1 and bool(c.all()) for c in per] for per in covers]  # a window over the whole dim

    def drop(i: int, feature: Tensor, probe: Tensor) -> Tensor:
        local, dims = feature - offsets[i], len(covers[i])
        out = ((local >= 0) & (local < counts[i])).view(-1, *[1] * dims)
        rest = local.clamp_min(0)
        for d, c in enumerate(covers[i]):  # captum's order: the first dim moves fastest
            j, rest = rest % c.shape[1], rest // c.shape[1]
            if not whole[i][d]:  # (whole dims stay broadcast: a token's window is (1, D))
                out = out & c.T[j].view(-1, *[1] * d, c.shape[0], *[1] * (dims - d - 1))
        return out

    features = torch.arange(sum(counts), device=device)
    pairs = torch.stack([features.repeat_interleave(batch), torch.arange(batch, device=device).repeat(len(features))])
    diff, fx, fb = _drops(prep, baselines, target, pairs, sum(counts), drop, max_batch)
    values = []
    for i, (e, per) in enumerate(zip(prep.explained, covers)):
        total = diff[:, offsets[i]:offsets[i] + counts[i]].reshape(batch, *[c.shape[1] for c in reversed(per)])
        total = total.permute(0, *range(len(per), 0, -1))  # (B, c_0, c_1, ...): position j_d in dim d + 1
        weight = torch.ones((), device=device)
        for c in per:  # sum over the windows covering each element, dim by dim: (B, ..., n_d)
            total = torch.tensordot(total, c.T.to(total.dtype), dims=([1], [0]))
            weight = weight[..., None] * c.sum(1).float()
        values.append((total.float() / weight).contiguous())
    return tuple(values), fx, fb


def feature_ablation(prep: Prepared, baselines: tuple[Tensor, ...], target: Tensor | None, masks: tuple[Tensor, ...],
                     max_batch: int) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """Captum's ``FeatureAblation`` of every explained tensor over integer ``masks`` (one per explained tensor,
    broadcastable to it, batch dim 1 or B; equal ids form one feature, across inputs too): attributions, ``f(x)``
    and ``f(baseline)`` per probe.

    Example:
        >>> from lightning_xai.functional.attribution._prepare import prepare
        >>> net, x = torch.nn.Linear(4, 1), torch.rand(2, 4)
        >>> prep = prepare(net, (x,), None, None, None, False)
        >>> values, fx, fb = feature_ablation(prep, (torch.zeros(2, 4),), torch.zeros(2, dtype=torch.long),
        ...                                   (torch.tensor([[0, 0, 1, 1]]),), 8)
        >>> bool(torch.allclose(values[0], (net.weight * x).view(2, 2, 2).sum(-1).repeat_interleave(2, 1)))
        True
    """
    device = prep.explained[0].device
    batch = prep.explained[0].shape[0]
    ids = torch.cat([m.reshape(-1).to(device) for m in masks]).unique()
    ranks = [torch.searchsorted(ids, m.to(device).contiguous()) for m in masks]  # feature ids as 0..P-1
    ranks = [r.expand(batch, *r.shape[1:]) for r in ranks]
    present = torch.zeros(batch, len(ids), dtype=torch.bool, device=device)
    for r in ranks:
        present.scatter_(1, r.reshape(batch, -1), True)
    pairs = present.T.nonzero().T  # (feature, probe) pairs, feature-major; a probe without the feature skips it

    def drop(i: int, feature: Tensor, probe: Tensor) -> Tensor:
        r = ranks[i][probe]
        return r == feature.view(-1, *[1] * (r.dim() - 1))

    diff, fx, fb = _drops(prep, baselines, target, pairs, len(ids), drop, max_batch)
    values = []
    for e, r in zip(prep.explained, ranks):
        flat = diff.gather(1, r.reshape(batch, -1)).view(r.shape)  # the one feature of each element
        values.append(flat.expand(e.shape).contiguous())
    return tuple(values), fx, fb


def fill(rows: Tensor, baseline: Tensor, probe: Tensor, off: Tensor) -> Tensor:
    """``torch.where(off, baseline[probe], rows)`` for ``rows`` (``(k, ...)``, contiguous) and ``off`` broadcastable
    to them. Where ``off`` broadcasts over trailing dims (a token's embedding) only the covered blocks are copied, in
    place: on the CPU ``torch.where`` over such a condition cost 2.5-13 ms on 128 rows of 64 x 128 embeddings, the
    copy 0.5-1.2 ms; elsewhere (image windows over every channel) ``torch.where`` was the faster (0.8 vs 1.2 ms).

    Example:
        >>> rows, base = torch.zeros(2, 3, 2), torch.arange(12.0).view(2, 3, 2)
        >>> off = torch.tensor([[True, False, False], [False, False, True]])[..., None]  # (k, L, 1)
        >>> fill(rows, base, torch.tensor([1, 0]), off).tolist()
        [[[6.0, 7.0], [0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [4.0, 5.0]]]
    """
    lead = off.dim()
    while lead > 1 and off.shape[lead - 1] == 1:
        lead -= 1
    block = math.prod(rows.shape[lead:])
    if block == 1:
        return torch.where(off, baseline.index_select(0, probe), rows)
    inner = math.prod(rows.shape[1:lead])  # blocks per row
    at = off.expand(*rows.shape[:lead], *off.shape[lead:]).reshape(-1).nonzero()[:, 0]
    source = probe[at // inner] * inner + at % inner
    rows.view(-1, block)[at] = baseline.reshape(-1, block)[source]
    return rows


def _drops(prep: Prepared, baselines: tuple[Tensor, ...], target: Tensor | None, pairs: Tensor, n_features: int,
           drop: Drop, max_batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """``f(x) - f(perturbed)`` ``(B, n_features)`` of every (feature, probe) column of ``pairs`` (0 elsewhere),
    ``f(x)`` and ``f(baseline)`` ``(B,)``, scored ``max_batch`` rows per forward."""
    device = prep.explained[0].device
    batch = prep.explained[0].shape[0]
    probes = torch.arange(batch, device=device)
    ends = torch.stack([torch.full((batch,), NONE, device=device), torch.full((batch,), ALL, device=device)], 1)
    feature = torch.cat([ends.reshape(-1), pairs[0]])  # f(x), f(baseline) of each probe first
    probe = torch.cat([probes.repeat_interleave(2), pairs[1]])
    scores = []
    with torch.no_grad():
        for start in range(0, feature.shape[0], max_batch):
            f, p = feature[start:start + max_batch], probe[start:start + max_batch]
            rows = []
            for i, (e, b) in enumerate(zip(prep.explained, baselines)):
                shape = (-1, *[1] * (e.dim() - 1))
                off = (drop(i, f, p) & (f != NONE).view(shape)) | (f == ALL).view(shape)
                rows.append(fill(e.index_select(0, p), b, p, off))
            out = prep.module(*rows, *(r[p] for r in prep.rows))
            scores.append(out.reshape(-1) if target is None else out.gather(1, target[p, None])[:, 0])
    score = torch.cat(scores)
    fx, fb = score[:2 * batch:2], score[1:2 * batch:2]
    diff = torch.zeros(batch, n_features, dtype=score.dtype, device=device)
    diff[pairs[1], pairs[0]] = fx[pairs[1]] - score[2 * batch:]
    return diff, fx, fb
