"""Private steps of the drift metrics in :mod:`lightning_xai.functional.drift`.

Argument checks, flattening, rankings with ties and the per-metric compute steps. The public functions and
:func:`~lightning_xai.functional.drift.drift_metrics` share these steps, so a metric computed alone and the
same metric inside the bundle can never disagree; the bundle only sorts each map once.

Conventions: ``a`` and ``b`` are flattened to ``(B, N)`` float32 (float64 stays float64); sums run in the
accumulation dtype (float64, float32 on MPS); ``keep`` is ``None`` or a bool ``(B, N)`` mask of the features
taken into account.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_xai._checks import expected


class Ranked(NamedTuple):
    """Sorted values of each row ``(B, N)`` and the positions they came from."""

    values: Tensor
    order: Tensor


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact sums of ranks and products; float32 where the device has no float64 (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def check_maps(name: str, x: Any, *, min_ndim: int = 2, layout: str = "(B, ...)") -> None:
    """A real, finite, non-empty tensor with at least ``min_ndim`` dimensions (batch first)."""
    if not isinstance(x, Tensor):
        raise TypeError(expected(name, "a torch.Tensor", type(x).__name__))
    if x.is_complex():
        raise TypeError(expected(name, "a real-valued tensor", x.dtype))
    if x.ndim < min_ndim or x.numel() == 0:
        raise ValueError(expected(name, f"a non-empty tensor of shape {layout}", tuple(x.shape)))
    finite = torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1) if x.is_floating_point() else None
    if finite is not None and not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise ValueError(
            expected(
                name,
                "finite attributions (replace NaN/inf first, e.g. with torch.nan_to_num)",
                f"non-finite values in probes {bad[:10]}{' ...' if len(bad) > 10 else ''}",
            )
        )


def check_pair(a: Any, b: Any, keep: Any = None, *, min_ndim: int = 2, layout: str = "(B, ...)") -> None:
    """Both maps checked, ``b`` shaped like ``a``, ``keep`` None or a bool tensor shaped like ``a``."""
    check_maps("a", a, min_ndim=min_ndim, layout=layout)
    check_maps("b", b, min_ndim=min_ndim, layout=layout)
    if b.shape != a.shape:
        raise ValueError(expected("b", f"a tensor of the same shape as `a` {tuple(a.shape)}", tuple(b.shape)))
    if keep is not None and (
        not isinstance(keep, Tensor) or keep.dtype != torch.bool or keep.shape != a.shape
    ):
        got = (keep.dtype, tuple(keep.shape)) if isinstance(keep, Tensor) else type(keep).__name__
        raise ValueError(
            expected("keep", f"None or a bool tensor of the same shape as `a` {tuple(a.shape)}", got)
        )


def check_count(name: str, k: Any) -> int:
    """An integer number of features, at least 1."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(expected(name, "an integer of at least 1 (a number of features)", k))
    return k


def check_fraction(name: str, k: Any) -> float:
    """A fraction of the features in (0, 1]."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 < float(k) <= 1.0:
        raise ValueError(expected(name, "a fraction of the features in (0, 1]", k))
    return float(k)


def flatten(x: Tensor) -> Tensor:
    """``(B, ...)`` -> ``(B, N)``, detached; float32 and float64 as they are, other dtypes as float32."""
    x = x.detach().reshape(x.shape[0], -1)
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def flat_keep(keep: Tensor | None, a: Tensor) -> Tensor | None:
    return None if keep is None else keep.to(a.device).reshape(a.shape[0], -1)


def both_equal(af: Tensor, bf: Tensor, keep: Tensor | None) -> Tensor:
    """Per probe: are the two maps equal on every kept feature? (The value of the degenerate cases.)"""
    same = af == bf
    return (same if keep is None else same | ~keep).all(dim=1)


def tie_spans(sorted_values: Tensor) -> tuple[Tensor, Tensor]:
    """First and last position (in the sorted order) of each element's group of equal values."""
    batch, n = sorted_values.shape
    pos = torch.arange(n, device=sorted_values.device).expand(batch, n)
    new = torch.ones_like(sorted_values, dtype=torch.bool)
    new[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    last = torch.ones_like(new)
    last[:, :-1] = new[:, 1:]
    start = torch.cummax(torch.where(new, pos, 0), dim=1).values
    end = torch.cummin(torch.where(last, pos, n - 1).flip(1), dim=1).values.flip(1)
    return start, end


def sort_rows(x: Tensor) -> Ranked:
    """Rows sorted ascending, ties in position order: the result of ``torch.sort(x, dim=1, stable=True)``.

    float32 rows on CPU/CUDA are sorted as one flat tensor of int64 keys ``row * 2^32 + k(value)``, with ``k``
    an order-preserving map of the float's bits to [0, 2^32): the same result, 1.5-2x faster than sorting the
    rows (a flat integer sort takes the radix path).
    """
    batch, n = x.shape
    if x.dtype != torch.float32 or x.device.type not in ("cpu", "cuda") or n >= 2**32 or batch >= 2**30:
        return Ranked(*torch.sort(x, dim=1, stable=True))
    bits = (x + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0: equal floats, equal keys
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # flip the magnitude bits of negatives: int32 order = float order
    rows = torch.arange(batch, device=x.device, dtype=torch.long)[:, None]
    _, flat = torch.sort((key.long() + (rows * 2**32 + 2**31)).flatten(), stable=True)
    order = flat.view(batch, n) - rows * n
    return Ranked(x.gather(1, order), order)


def sort_signed(x: Tensor, keep: Tensor | None) -> Ranked:
    """``x`` sorted ascending (stable); excluded features get +inf, so come last."""
    if keep is not None:
        x = torch.where(keep, x, torch.full_like(x, torch.inf))
    return sort_rows(x)


def average_ranks(s: Ranked, dtype: torch.dtype) -> Tensor:
    """Ranks 1..n from an ascending sort (ties get their average rank, as ``scipy.stats.rankdata``)."""
    start, end = tie_spans(s.values)
    ranks = (start + end).to(dtype) / 2 + 1
    return torch.empty_like(ranks).scatter_(1, s.order, ranks)


def rank_by_magnitude(x: Tensor, keep: Tensor | None, signed: Ranked | None = None) -> Ranked:
    """``|x|`` sorted descending, ties later position first; excluded features get -1, so come last.

    A non-negative ``x`` without ``keep`` reuses its ascending sort ``signed`` (reversed): no second sort.
    """
    if keep is None and signed is not None and bool((signed.values[:, 0] >= 0).all()):
        return Ranked(signed.values.flip(1), signed.order.flip(1))
    score = x.abs()
    if keep is not None:
        score = torch.where(keep, score, torch.full_like(score, -1.0))
    values, order = sort_rows(score)
    return Ranked(values.flip(1), order.flip(1))


def pearson(x: Tensor, y: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """Pearson correlation per row over the kept features, and whether it is defined (both variances > 0)."""
    if keep is None:
        xc, yc = x - x.mean(dim=1, keepdim=True), y - y.mean(dim=1, keepdim=True)
    else:
        w = keep.to(x.dtype)
        n = w.sum(dim=1, keepdim=True).clamp(min=1)
        xc = (x - (x * w).sum(dim=1, keepdim=True) / n) * w
        yc = (y - (y * w).sum(dim=1, keepdim=True) / n) * w
    sxx, syy = xc.square().sum(dim=1), yc.square().sum(dim=1)
    defined = (sxx > 0) & (syy > 0)
    r = (xc * yc).sum(dim=1) / torch.where(defined, (sxx * syy).sqrt(), torch.ones_like(sxx))
    return r.clamp(-1.0, 1.0), defined


def spearman_step(sa: Ranked, sb: Ranked, af: Tensor, bf: Tensor, keep: Tensor | None) -> Tensor:
    dtype = accumulation_dtype(af.device)
    r, defined = pearson(average_ranks(sa, dtype), average_ranks(sb, dtype), keep)
    return torch.where(defined, r, both_equal(af, bf, keep).to(r.dtype))


def cosine_step(af: Tensor, bf: Tensor, keep: Tensor | None) -> Tensor:
    dtype = accumulation_dtype(af.device)
    af, bf = af.to(dtype), bf.to(dtype)
    if keep is not None:
        af, bf = af * keep, bf * keep
    na, nb = af.norm(dim=1), bf.norm(dim=1)
    defined = (na > 0) & (nb > 0)
    c = (af * bf).sum(dim=1) / torch.where(defined, na * nb, torch.ones_like(na))
    return torch.where(defined, c.clamp(-1.0, 1.0), ((na == 0) & (nb == 0)).to(c.dtype))


def ndcg_step(ra: Ranked, rb: Ranked, af: Tensor, keep: Tensor | None, k: int | None) -> Tensor:
    """nDCG of ``rb``'s ranking, relevance ``|a|``; gains of tied scores are averaged (as scikit-learn)."""
    n, dtype = af.shape[1], accumulation_dtype(af.device)
    k = n if k is None else min(k, n)
    positions = torch.arange(n, device=af.device, dtype=dtype)
    discount = torch.where(positions < k, 1.0 / torch.log2(positions + 2), torch.zeros_like(positions))
    cumulative = torch.cat([discount.new_zeros(1), discount.cumsum(0)])
    rel = af.abs().to(dtype) if keep is None else af.abs().to(dtype) * keep
    start, end = tie_spans(rb.values)
    mean_discount = (cumulative[end + 1] - cumulative[start]) / (end - start + 1).to(dtype)
    dcg = (rel.gather(1, rb.order) * mean_discount).sum(dim=1)
    ideal = (ra.values.to(dtype).clamp(min=0) * discount).sum(dim=1)
    defined = ideal > 0
    score = dcg / torch.where(defined, ideal, torch.ones_like(ideal))
    no_signal = rb.values[:, 0] <= 0  # b has no mass on the kept features either
    return torch.where(defined, score.clamp(0.0, 1.0), no_signal.to(score.dtype))


def top_sets(r: Ranked, counts: Tensor) -> Tensor:
    """Bool ``(B, N)`` masks of the first ``counts[i]`` features of each ranking."""
    n = r.order.shape[1]
    chosen = torch.arange(n, device=r.order.device).expand_as(r.order) < counts[:, None]
    return torch.zeros_like(chosen).scatter_(1, r.order, chosen)


def kept_counts(keep: Tensor | None, af: Tensor) -> Tensor:
    """Number of kept features per probe, ``(B,)`` int64."""
    if keep is None:
        return torch.full((af.shape[0],), af.shape[1], dtype=torch.long, device=af.device)
    return keep.sum(dim=1)


def topk_iou_step(ra: Ranked, rb: Ranked, af: Tensor, keep: Tensor | None, k: float) -> Tensor:
    counts = torch.ceil(kept_counts(keep, af).to(accumulation_dtype(af.device)) * k - 1e-9).long()
    sa, sb = top_sets(ra, counts), top_sets(rb, counts)
    inter, union = (sa & sb).sum(dim=1), (sa | sb).sum(dim=1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=af.dtype))


def top_overlap_step(ra: Ranked, rb: Ranked, af: Tensor, keep: Tensor | None, k: int) -> Tensor:
    counts = kept_counts(keep, af).clamp(max=k)
    inter = (top_sets(ra, counts) & top_sets(rb, counts)).sum(dim=1)
    return torch.where(counts > 0, inter / counts.clamp(min=1), torch.ones_like(inter, dtype=af.dtype))


def as_output(x: Tensor) -> Tensor:
    """Every metric is returned as float32 ``(B,)``."""
    return x.to(torch.float32)
