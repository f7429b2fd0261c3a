"""Summaries of attributions of any method (SHAP, Grad-CAM, gradients): how concentrated they are and how they
split across inputs (modalities). Pure torch; re-exported by :mod:`lightning_xai.functional.shap`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_xai._checks import expected

__all__ = ["gini", "modality_shares"]


def _as_values(values: Any) -> tuple[Tensor, ...]:
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if not values or not all(isinstance(v, Tensor) and v.ndim >= 1 for v in values):
        raise TypeError(expected("values", "a tensor or a tuple of tensors (batch first)", values))
    if len({v.shape[0] for v in values}) != 1:
        raise ValueError(
            expected("values", "tensors with the same batch size", [tuple(v.shape) for v in values])
        )
    return values


def gini(values: Tensor | tuple[Tensor, ...]) -> Tensor:
    """Gini coefficient of ``|phi|`` per sample, over every feature of every input: 0 when attribution is
    spread evenly, towards 1 when a few features carry it all (0 for all-zero attributions).

    Example:
        >>> gini(torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]]))
        tensor([0.0000, 0.7500])
    """
    flat = torch.cat([v.detach().flatten(1).abs().float() for v in _as_values(values)], dim=1)
    n = flat.shape[1]
    ordered = flat.sort(dim=1).values
    ranks = torch.arange(1, n + 1, dtype=torch.float32, device=flat.device)
    total = ordered.sum(1)
    g = ((2 * ranks - n - 1) * ordered).sum(1) / (n * total.clamp_min(torch.finfo(torch.float32).tiny))
    return torch.where(total > 0, g, torch.zeros_like(g))


def modality_shares(values: Tensor | tuple[Tensor, ...]) -> Tensor:
    """Each input's share of the total ``|phi|`` per sample, ``(B, n_inputs)``; rows sum to 1 (all zeros
    when a sample has no attribution at all).

    Example:
        >>> modality_shares((torch.tensor([[3.0, -1.0]]), torch.tensor([[0.0, 0.0, 4.0]])))
        tensor([[0.5000, 0.5000]])
    """
    sums = torch.stack([v.detach().flatten(1).abs().float().sum(1) for v in _as_values(values)], dim=1)
    total = sums.sum(1, keepdim=True)
    return torch.where(
        total > 0, sums / total.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(sums)
    )
