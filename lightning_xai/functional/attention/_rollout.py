"""Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (Chefer et al. 2021, the generic rule),
on captured ``(B, heads, N, N)`` probabilities (rows: queries, columns: keys), and the token scores read from them.

The rules, as implemented:

* **rollout**: per layer ``l`` (first to last, or to ``layer``), fuse the heads (mean, max or min), drop the
  ``discard_ratio`` smallest off-diagonal entries of each sample's fused matrix (set to 0; the diagonal is never
  dropped), add the residual connection as ``Â = 0.5 * A + 0.5 * I`` and renormalise each row to sum to 1; the
  rollout is ``R = Â_L ... Â_2 Â_1`` (row ``i``: how much output token ``i`` draws on each input token).
  Reference implementations (vit-explain) keep only the first (CLS-to-CLS) entry from discarding; keeping the whole
  diagonal, which the identity term dominates anyway, treats every token alike.
* **grad_rollout**: per layer ``Ā = mean_heads(relu(∇A ⊙ A))`` with ``∇A`` the gradient of the explained score
  (the target's logit) to the probabilities; ``R`` starts at ``I`` and ``R ← R + Ā R`` layer by layer, i.e.
  ``R = (I + Ā_L) ... (I + Ā_1)``. This is Chefer et al.'s rule for self-attention (their eqs. 5-6); their row
  normalisation (eqs. 8-9) applies only to bi-modal co-attention, so rows are *not* renormalised.
* **scores**: one row of ``R`` (the class token's, or any query index per sample) or the mean of the rows of the
  valid (unpadded) tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai._checks import check_choice, expected

__all__ = ["HEAD_FUSIONS", "fuse_heads", "grad_rollout", "query_scores", "rollout", "stack_layers"]

#: how the heads of one layer are fused for rollout
HEAD_FUSIONS = ("mean", "max", "min")


def stack_layers(attentions: Sequence[Tensor] | Tensor, name: str = "attentions") -> Tensor:
    """``(B, layers, heads, N, N)`` from per-layer ``(B, heads, N, N)`` probabilities (or that stack itself).

    Example:
        >>> stack_layers([torch.ones(2, 3, 4, 4)] * 5).shape
        torch.Size([2, 5, 3, 4, 4])
    """
    if isinstance(attentions, Tensor):
        stacked = attentions
    else:
        layers = list(attentions)
        shapes = {tuple(a.shape) for a in layers if isinstance(a, Tensor)}
        if not layers or len(shapes) != 1 or not all(isinstance(a, Tensor) for a in layers):
            raise ValueError(expected(name, "per-layer (batch, heads, N, N) tensors of one shape (one token set "
                                      "through every layer)", sorted(shapes) or layers))
        stacked = torch.stack(layers, 1)
    if stacked.dim() != 5 or stacked.shape[-1] != stacked.shape[-2]:
        raise ValueError(expected(name, "(batch, layers, heads, N, N) self-attention probabilities",
                                  tuple(stacked.shape)))
    return stacked


def layers_through(layer: int | None, layers: int) -> int:
    """How many layers a rollout through ``layer`` (0-based, negative from the end; ``None``: all) multiplies.

    Example:
        >>> layers_through(None, 4), layers_through(-2, 4)
        (4, 3)
    """
    if layer is None:
        return layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -layers <= layer < layers:
        raise ValueError(expected("layer", f"None or a layer index in [{-layers}, {layers - 1}]", layer))
    return layer % layers + 1


def fuse_heads(attention: Tensor, head_fusion: str = "mean") -> Tensor:
    """Fuse the heads axis (dim -3) of ``(..., heads, q, k)`` by ``head_fusion``: mean, max or min.

    Example:
        >>> fuse_heads(torch.tensor([[[[1.0]], [[3.0]]]]), "max")
        tensor([[[3.]]])
    """
    head_fusion = check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    if head_fusion == "mean":
        return attention.mean(-3)
    return attention.amax(-3) if head_fusion == "max" else attention.amin(-3)


def discard_smallest(fused: Tensor, discard_ratio: float) -> Tensor:
    """Zero the ``discard_ratio`` smallest off-diagonal entries of each ``(N, N)`` matrix of ``(B, N, N)``.

    Example:
        >>> discard_smallest(torch.tensor([[[0.5, 0.25], [0.75, 0.5]]]), 0.5).tolist()
        [[[0.5, 0.0], [0.75, 0.5]]]
    """
    n = fused.shape[-1]
    count = int(discard_ratio * (n * n - n))
    if count <= 0:
        return fused
    eye = torch.eye(n, dtype=torch.bool, device=fused.device)
    ranked = fused.masked_fill(eye, float("inf")).flatten(1)
    drop = ranked.topk(count, dim=1, largest=False).indices
    return fused.flatten(1).scatter(1, drop, 0.0).view_as(fused)


def rollout(attentions: Sequence[Tensor] | Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0,
            layer: int | None = None) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``R = Â_L ... Â_1`` with ``Â = rownorm(0.5 * fuse(A) + 0.5 * I)``.

    Args:
        attentions: per-layer ``(B, heads, N, N)`` probabilities, first layer first (or their
            ``(B, layers, heads, N, N)`` stack).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction in ``[0, 1)`` of each fused matrix's smallest off-diagonal entries set to 0.
        layer: the last layer multiplied (0-based, negative from the end); ``None``: all.

    Returns:
        The ``(B, N, N)`` rollout (float32); each row sums to 1.

    Example:
        >>> a = torch.softmax(torch.randn(2, 3, 2, 4, 4), -1)
        >>> r = rollout(a)
        >>> r.shape, torch.allclose(r.sum(-1), torch.ones(2, 4))
        (torch.Size([2, 4, 4]), True)
    """
    stacked = stack_layers(attentions)
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise ValueError(expected("discard_ratio", "a number in [0, 1)", discard_ratio))
    fused = fuse_heads(stacked.float(), head_fusion)  # (B, L, N, N)
    n = fused.shape[-1]
    eye = torch.eye(n, dtype=fused.dtype, device=fused.device)
    result = eye.expand(fused.shape[0], n, n)
    for index in range(layers_through(layer, fused.shape[1])):
        step = 0.5 * discard_smallest(fused[:, index], float(discard_ratio)) + 0.5 * eye
        step = step / step.sum(-1, keepdim=True)
        result = step @ result
    return result


def grad_rollout(attentions: Sequence[Tensor] | Tensor, gradients: Sequence[Tensor] | Tensor,
                 layer: int | None = None) -> Tensor:
    """Gradient-weighted rollout, Chefer et al. 2021's generic rule for self-attention:
    ``R = (I + Ā_L) ... (I + Ā_1)`` with ``Ā = mean_heads(relu(∇A ⊙ A))``, rows not renormalised.

    Args:
        attentions: per-layer ``(B, heads, N, N)`` probabilities, first layer first (or their stack).
        gradients: the explained score's gradient to each, same shapes.
        layer: the last layer multiplied (0-based, negative from the end); ``None``: all.

    Returns:
        The ``(B, N, N)`` relevance matrix (float32).

    Example:
        >>> a = torch.softmax(torch.randn(1, 2, 2, 3, 3), -1)
        >>> torch.equal(grad_rollout(a, -torch.ones_like(a)), torch.eye(3)[None])  # no positive evidence: R = I
        True
    """
    stacked, grads = stack_layers(attentions), stack_layers(gradients, "gradients")
    if stacked.shape != grads.shape:
        raise ValueError(expected("gradients", f"one gradient per probability, shape {tuple(stacked.shape)}",
                                  tuple(grads.shape)))
    weighted = (grads.float() * stacked.float()).clamp(min=0).mean(2)  # (B, L, N, N)
    n = weighted.shape[-1]
    result = torch.eye(n, dtype=weighted.dtype, device=weighted.device).expand(weighted.shape[0], n, n)
    for index in range(layers_through(layer, weighted.shape[1])):
        result = result + weighted[:, index] @ result
    return result


def query_scores(matrix: Tensor, query: int | Tensor | None = 0, mask: Tensor | None = None) -> Tensor:
    """One score per token from a ``(B, N, N)`` rollout or attention matrix: the row of ``query`` (an index, or one
    per sample) or, with ``query=None``, the mean of the rows of the valid tokens (``mask``: ``(B, N)``, nonzero
    for valid; padded tokens' own rows are left out of the mean).

    Example:
        >>> m = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
        >>> query_scores(m).tolist(), query_scores(m, None).tolist()
        ([[0.5, 0.5]], [[0.25, 0.75]])
    """
    if matrix.dim() != 3 or matrix.shape[1] != matrix.shape[2]:
        raise ValueError(expected("matrix", "a (batch, N, N) matrix", tuple(matrix.shape)))
    batch, n = matrix.shape[:2]
    if query is None:
        weights = torch.ones(batch, n, dtype=matrix.dtype, device=matrix.device)
        if mask is not None:
            weights = mask.to(device=matrix.device, dtype=matrix.dtype).reshape(batch, n)
        weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-12)
        return (weights[:, :, None] * matrix).sum(1)
    index = torch.as_tensor(query, device=matrix.device).long().expand(batch) if not isinstance(query, Tensor) \
        else query.to(matrix.device).long().reshape(-1).expand(batch)
    if bool(((index < 0) | (index >= n)).any()):
        raise ValueError(expected("query", f"token indices in [0, {n - 1}]", index.tolist()))
    return matrix[torch.arange(batch, device=matrix.device), index]
