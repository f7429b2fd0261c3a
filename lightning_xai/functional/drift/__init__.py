"""Attribution drift: how far apart are two explanations of the same probes?

Pure torch. Every metric takes two attribution batches ``a`` (the reference) and ``b`` of the same shape
``(B, ...)``: image maps ``(B, H, W)``, token values ``(B, L)``, clips ``(B, T, H, W)``, any shape; and
returns a float32 ``(B,)`` tensor, one value per probe. Maps are compared as flattened vectors, except by the
spatial metrics, which use the last two dimensions as (H, W) pixels.

=========================  ==============  ===========================================================
metric                     identical maps  meaning
=========================  ==============  ===========================================================
``spearman``               1.0             rank correlation of the signed values (ties averaged)
``ndcg``                   1.0             nDCG of ``b``'s importance ranking, relevance ``|a|``
``topk_iou``               1.0             IoU of the top ``k`` fraction of features by ``|value|``
``cosine``                 1.0             cosine similarity of the signed values
``com_shift``              0.0             distance in pixels between the centres of mass of ``|a|``, ``|b|``
``focus_radius_change``    0.0             ``focus_radius(b) - focus_radius(a)``, pixels (signed)
``top_token_overlap``      1.0             share of the top ``k`` tokens by ``|value|`` in common
=========================  ==============  ===========================================================

:data:`IDENTICAL_VALUE` holds that column and :data:`HIGHER_IS_CLOSER` names the metrics for which a larger
value means closer (for the others, closer to 0 is closer). Amazon SageMaker Clarify's feature-attribution
drift check compares importance rankings by nDCG (scikit-learn's) and reports a violation below 0.9.

Shared conventions:

* Degenerate probes never give NaN: a correlation or similarity that is undefined (a constant map for
  ``spearman``, an all-zero map for ``cosine``, all-zero relevance ``|a|`` for ``ndcg``) is 1.0 if the two
  maps are equal there and 0.0 otherwise.
* Non-finite values (NaN, +/-inf) are refused with a ``ValueError`` naming the probes; replace them first
  (``torch.nan_to_num``) if a value is wanted anyway.
* ``keep`` (optional, bool, shaped like ``a``) restricts every metric to the features it marks: padding and
  special tokens of token maps, a region of an image. Spatial metrics count excluded pixels as no mass.
* Rankings by ``|value|`` break ties by position (the later feature first), except ``ndcg``, which averages
  the gains of tied scores like ``sklearn.metrics.ndcg_score``. Identical maps give the identity values.
* Sums run in float64 (float32 on MPS). :func:`drift_metrics` sorts each map once (twice if it has negative
  values); the sorts are most of its cost.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

import lightning_xai.functional.drift._core as core
from lightning_xai._checks import check_choice, expected
from lightning_xai.functional.drift._spatial import (
    MAP_LAYOUT,
    center_of_mass_shift,
    com_shift_step,
    focus_radius,
    focus_radius_change,
    radius_step,
    spatial_mass,
)

__all__ = [
    "HIGHER_IS_CLOSER",
    "IDENTICAL_VALUE",
    "METRICS_BY_KIND",
    "center_of_mass_shift",
    "cosine",
    "drift_metrics",
    "focus_radius",
    "focus_radius_change",
    "ndcg",
    "spearman",
    "top_token_overlap",
    "topk_iou",
]

METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "map": ("spearman", "ndcg", "topk_iou", "cosine", "com_shift", "focus_radius_change"),
    "tokens": ("spearman", "ndcg", "topk_iou", "cosine", "top_token_overlap"),
    "vector": ("spearman", "ndcg", "topk_iou", "cosine"),
}
"""The metric names :func:`drift_metrics` returns for each kind of attribution (stable: used in log tags)."""

HIGHER_IS_CLOSER: tuple[str, ...] = ("spearman", "ndcg", "topk_iou", "cosine", "top_token_overlap")
"""Metrics for which larger means closer (at most 1.0); the others are distances, closest at 0.0."""

IDENTICAL_VALUE: dict[str, float] = {
    **dict.fromkeys(HIGHER_IS_CLOSER, 1.0),
    "com_shift": 0.0,
    "focus_radius_change": 0.0,
}
"""The value of each metric for two identical maps."""


def spearman(a: Tensor, b: Tensor, keep: Tensor | None = None) -> Tensor:
    """Spearman rank correlation of each probe's flattened maps, ties given their average rank.

    The same value as ``scipy.stats.spearmanr(a[i].flatten(), b[i].flatten())``. A probe on which either map
    is constant (no ranking) gives 1.0 if the two maps are equal there, else 0.0 (scipy gives NaN).

    Args:
        a: Reference attributions ``(B, ...)``.
        b: Attributions to compare, same shape.
        keep: Optional bool mask shaped like ``a``: only marked features are ranked.

    Returns:
        Float32 ``(B,)`` in [-1, 1].

    Example:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
        >>> spearman(a, torch.stack([a[0] * 10, a[1].flip(0)]))
        tensor([ 1., -1.])
    """
    core.check_pair(a, b, keep)
    af, bf, kf = core.flatten(a), core.flatten(b), core.flat_keep(keep, a)
    sa, sb = core.sort_signed(af, kf), core.sort_signed(bf, kf)
    return core.as_output(core.spearman_step(sa, sb, af, bf, kf))


def ndcg(a: Tensor, b: Tensor, k: int | None = None, keep: Tensor | None = None) -> Tensor:
    """Normalised discounted cumulative gain of ``b``'s importance ranking, with ``|a|`` as the relevance.

    Features are ranked by ``|b|`` (descending); the gain of the feature at position ``i`` (0-based) is its
    reference importance ``|a|`` discounted by ``1 / log2(i + 2)``, summed over the first ``k`` positions and
    divided by the same sum for ``a``'s own ranking (the ideal). Gains of tied ``|b|`` values are averaged, so
    the result equals ``sklearn.metrics.ndcg_score(|a|, |b|, k=k)`` per probe. 1.0 when ``b`` ranks the
    features as ``a`` does. This is the measure cloud attribution-drift monitors use (SageMaker Clarify alerts
    below 0.9).

    Args:
        a: Reference attributions ``(B, ...)``.
        b: Attributions to compare, same shape.
        k: Number of top positions counted (``None``: all features; more than there are: all).
        keep: Optional bool mask shaped like ``a``: only marked features are ranked.

    Returns:
        Float32 ``(B,)`` in [0, 1].

    Example:
        >>> import torch
        >>> a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
        >>> ndcg(a, a), ndcg(a, a.flip(1), k=1)
        (tensor([1.]), tensor([0.2500]))
    """
    core.check_pair(a, b, keep)
    k = None if k is None else core.check_count("k", k)
    af, bf, kf = core.flatten(a), core.flatten(b), core.flat_keep(keep, a)
    ra, rb = core.rank_by_magnitude(af, kf), core.rank_by_magnitude(bf, kf)
    return core.as_output(core.ndcg_step(ra, rb, af, kf, k))


def topk_iou(a: Tensor, b: Tensor, k: float = 0.1, keep: Tensor | None = None) -> Tensor:
    """Intersection over union of the top ``k`` fraction of features by ``|value|`` of each map.

    Each set holds the ``ceil(k * N)`` features with the largest ``|value|`` (``N`` the number of kept
    features); ties at the boundary go to the later position.

    Args:
        a: Reference attributions ``(B, ...)``.
        b: Attributions to compare, same shape.
        k: Fraction of the features in each set, in (0, 1].
        keep: Optional bool mask shaped like ``a``: only marked features can be chosen.

    Returns:
        Float32 ``(B,)`` in [0, 1].

    Example:
        >>> import torch
        >>> a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
        >>> topk_iou(a, torch.tensor([[4.0, 1.0, 2.0, 3.0]]), k=0.5)  # {0, 1} vs {0, 3}
        tensor([0.3333])
    """
    core.check_pair(a, b, keep)
    k = core.check_fraction("k", k)
    af, bf, kf = core.flatten(a), core.flatten(b), core.flat_keep(keep, a)
    ra, rb = core.rank_by_magnitude(af, kf), core.rank_by_magnitude(bf, kf)
    return core.as_output(core.topk_iou_step(ra, rb, af, kf, k))


def cosine(a: Tensor, b: Tensor, keep: Tensor | None = None) -> Tensor:
    """Cosine similarity of each probe's flattened maps (signed values).

    Two all-zero maps give 1.0; one all-zero map gives 0.0.

    Args:
        a: Reference attributions ``(B, ...)``.
        b: Attributions to compare, same shape.
        keep: Optional bool mask shaped like ``a``: excluded features count as 0.

    Returns:
        Float32 ``(B,)`` in [-1, 1].

    Example:
        >>> import torch
        >>> cosine(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        tensor([1., 0.])
    """
    core.check_pair(a, b, keep)
    af, bf, kf = core.flatten(a), core.flatten(b), core.flat_keep(keep, a)
    return core.as_output(core.cosine_step(af, bf, kf))


def top_token_overlap(a: Tensor, b: Tensor, k: int = 5, keep: Tensor | None = None) -> Tensor:
    """Share of the ``k`` tokens with the largest ``|value|`` that the two maps have in common.

    Args:
        a: Reference token attributions ``(B, L)``.
        b: Attributions to compare, same shape.
        k: Number of top tokens; a probe with fewer (kept) tokens uses all of them. Ties go to the later
            token.
        keep: Optional bool mask ``(B, L)``: False for padding and special tokens, which are never counted. A
            probe with no kept token gives 1.0.

    Returns:
        Float32 ``(B,)`` in [0, 1], in steps of ``1 / k``.

    Example:
        >>> import torch
        >>> a = torch.tensor([[0.9, 0.1, 0.5, 0.0]])
        >>> b = torch.tensor([[0.9, 0.6, 0.1, 0.0]])
        >>> top_token_overlap(a, b, k=2)
        tensor([0.5000])
        >>> top_token_overlap(a, b, k=2, keep=torch.tensor([[False, True, True, True]]))
        tensor([1.])
    """
    core.check_pair(a, b, keep, min_ndim=2, layout="(B, L)")
    if a.ndim != 2:
        raise ValueError(expected("a", "token attributions of shape (B, L)", tuple(a.shape)))
    k = core.check_count("k", k)
    af, bf, kf = core.flatten(a), core.flatten(b), core.flat_keep(keep, a)
    ra, rb = core.rank_by_magnitude(af, kf), core.rank_by_magnitude(bf, kf)
    return core.as_output(core.top_overlap_step(ra, rb, af, kf, k))


def drift_metrics(
    a: Tensor,
    b: Tensor,
    kind: Literal["auto", "map", "tokens", "vector"] = "auto",
    k_fraction: float = 0.1,
    top_tokens: int = 5,
    keep: Tensor | None = None,
    ndcg_k: int | None = None,
) -> dict[str, Tensor]:
    """Every drift metric that applies to this kind of attribution, per probe, sorting each map only once.

    Args:
        a: Reference attributions ``(B, ...)``.
        b: Attributions to compare, same shape.
        kind: ``"map"`` (``(B, ..., H, W)``: images, clips), ``"tokens"`` (``(B, L)``), ``"vector"`` (any
            shape, no spatial or token metric), or ``"auto"``: ``"tokens"`` for 2-D input, ``"map"`` for more
            dimensions.
        k_fraction: ``k`` of :func:`topk_iou`.
        top_tokens: ``k`` of :func:`top_token_overlap`.
        keep: Optional bool mask shaped like ``a`` (padding, special tokens, a region), used by every metric.
        ndcg_k: ``k`` of :func:`ndcg` (``None``: all features).

    Returns:
        ``{name: float32 (B,)}`` with the names of ``METRICS_BY_KIND[kind]``, in that order; each equal to the
        function of the same name (``com_shift`` is :func:`center_of_mass_shift`).

    Raises:
        TypeError: If ``a``, ``b`` are not real tensors.
        ValueError: If the shapes differ or do not suit ``kind``, values are not finite, or an option is out
            of range.

    Example:
        >>> import torch
        >>> a = torch.rand(2, 8, 8)
        >>> metrics = drift_metrics(a, a)
        >>> {name: value.tolist() for name, value in metrics.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'spearman': [1.0, 1.0], 'ndcg': [1.0, 1.0], 'topk_iou': [1.0, 1.0], 'cosine': [1.0, 1.0],
         'com_shift': [0.0, 0.0], 'focus_radius_change': [0.0, 0.0]}
    """
    check_choice("kind", kind, ("auto", *METRICS_BY_KIND))
    core.check_pair(a, b, keep)
    if kind == "auto":
        kind = "tokens" if a.ndim == 2 else "map"
    if kind == "map" and a.ndim < 3:
        raise ValueError(expected("a", f"attributions of shape {MAP_LAYOUT} for kind='map'", tuple(a.shape)))
    if kind == "tokens" and a.ndim != 2:
        raise ValueError(
            expected("a", "token attributions of shape (B, L) for kind='tokens'", tuple(a.shape))
        )
    k_fraction = core.check_fraction("k_fraction", k_fraction)
    top_tokens = core.check_count("top_tokens", top_tokens)
    ndcg_k = None if ndcg_k is None else core.check_count("ndcg_k", ndcg_k)

    af, bf, kf = core.flatten(a), core.flatten(b), core.flat_keep(keep, a)
    sa, sb = core.sort_signed(af, kf), core.sort_signed(bf, kf)
    ra, rb = core.rank_by_magnitude(af, kf, sa), core.rank_by_magnitude(bf, kf, sb)
    out = {
        "spearman": core.spearman_step(sa, sb, af, bf, kf),
        "ndcg": core.ndcg_step(ra, rb, af, kf, ndcg_k),
        "topk_iou": core.topk_iou_step(ra, rb, af, kf, k_fraction),
        "cosine": core.cosine_step(af, bf, kf),
    }
    if kind == "tokens":
        out["top_token_overlap"] = core.top_overlap_step(ra, rb, af, kf, top_tokens)
    if kind == "map":
        dtype = core.accumulation_dtype(a.device)
        mass_a, mass_b = spatial_mass(a, keep, dtype), spatial_mass(b, keep, dtype)
        out["com_shift"] = com_shift_step(mass_a, mass_b)
        out["focus_radius_change"] = radius_step(mass_b) - radius_step(mass_a)
    return {name: core.as_output(out[name]) for name in METRICS_BY_KIND[kind]}
