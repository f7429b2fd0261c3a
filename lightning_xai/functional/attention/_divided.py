"""Rollout through divided space-time attention (TimeSformer, Bertasius et al. 2021).

Each TimeSformer block attends twice: **temporal** attention, in which each patch position attends over the ``T``
frames (``(B * N, heads, T, T)``; the class token takes no part and passes through), then **spatial** attention, in
which each frame's ``N`` patches and a copy of the class token attend within the frame (``(B * T, heads, 1 + N,
1 + N)``); the model averages the ``T`` copies of the class token's output. Neither is a matrix over the clip's
``M = 1 + T * N`` tokens, so rollout composes them into one token-mixing matrix per block. The definition, as
implemented:

* **token order**: index 0 is the class token, ``1 + t * N + n`` patch ``n`` (row-major on the patch grid) of frame
  ``t`` (frame-major, so the class token's row reshapes to ``(frames, grid_h, grid_w)``; TimeSformer's own hidden
  states order the patches ``1 + n * T + t``).
* **per captured matrix** (each patch position's ``T x T``, each frame's ``(1 + N) x (1 + N)``): heads fused (mean,
  max or min), the ``discard_ratio`` smallest off-diagonal entries dropped, the residual added as
  ``Â = 0.5 * A + 0.5 * I`` and rows renormalised (Abnar & Zuidema), once for each sub-attention, since each has
  its own residual connection.
* **temporal matrix** ``𝒯`` (``M x M``): the class token's row is ``e_0`` (it only takes its residual path); the row
  of ``(t, n)`` puts ``Â_n[t, t']`` on ``(t', n)``.
* **spatial matrix** ``𝒮``: the row of ``(t, n)`` puts ``Â_t[1 + n, 0]`` on the class token and ``Â_t[1 + n, 1 + n']``
  on ``(t, n')``; the class token's row is the **mean over frames** of the frames' class rows (the model averages
  the frames' class-token outputs): ``mean_t Â_t[0, 0]`` on itself and ``Â_t[0, 1 + n'] / T`` on ``(t, n')``.
* **rollout**: ``R = (𝒮_L 𝒯_L) ... (𝒮_1 𝒯_1)``, rows summing to 1. ``temporal_dense`` (a per-token linear map) mixes
  no tokens and is left out, as rollout leaves out value and output projections.
* **grad_rollout** (Chefer et al.'s generic rule): per captured matrix ``Ā = mean_heads(relu(∇A ⊙ A))``, spread as
  above into ``𝒯̄`` (class row 0) and ``𝒮̄``, whose class row is the **sum over frames** of ``Ā_t[0, ·]`` (the
  gradient of the frame-averaged class token already carries the ``1 / T``); ``R = Π (I + 𝒮̄_l)(I + 𝒯̄_l)``, rows not
  renormalised.
* **raw attention** (``"attention"``): the spatial attention of one block spread over the clip's tokens as ``𝒮``
  without the residual (each frame's block on the diagonal, the class row the mean over frames), heads fused per
  frame; the temporal attention has no class-token row to read.

The matrices are applied to ``R`` by their structure (one batched product per sub-attention), never built dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional.attention._rollout import discard_smallest, fuse_heads, layers_through

__all__ = ["DIVIDED_RULES", "DividedAttention", "divided_attention", "divided_grad_rollout", "divided_grid",
           "divided_rollout", "spread_spatial"]

#: the choices of the divided space-time definition per method, recorded in an explanation's settings
DIVIDED_RULES = {
    "attention": "spatial attention of the layer over the clip's tokens (frames' blocks on the diagonal, class row "
                 "the mean over frames), heads fused per frame; temporal attention not shown",
    "rollout": "per block temporal then spatial, each rownorm(0.5 * A + 0.5 * I) with heads fused and discard per "
               "captured matrix; class row of the spatial step the mean over frames",
    "grad_rollout": "per block (I + spatial)(I + temporal) of mean_heads(relu(grad * A)); class row of the spatial "
                    "step the sum over frames",
}


@dataclass(frozen=True)
class DividedAttention:
    """The captured sub-attentions of a divided space-time model, first block first.

    Attributes:
        temporal: per block ``(B * N, heads, T, T)``: each patch position's attention over the frames.
        spatial: per block ``(B * T, heads, 1 + N, 1 + N)``: each frame's class token and patches.
        temporal_gradients: the explained score's gradients to ``temporal`` (``None`` if not taken).
        spatial_gradients: likewise to ``spatial``.

    Example:
        >>> d = DividedAttention((torch.ones(2 * 4, 1, 3, 3) / 3,), (torch.ones(2 * 3, 1, 5, 5) / 5,))
        >>> d.batch, d.frames, d.patches, d.tokens, d.layers
        (2, 3, 4, 13, 1)
    """

    temporal: tuple[Tensor, ...]
    spatial: tuple[Tensor, ...]
    temporal_gradients: tuple[Tensor, ...] | None = None
    spatial_gradients: tuple[Tensor, ...] | None = None

    def __post_init__(self) -> None:
        if not self.temporal or len(self.temporal) != len(self.spatial):
            raise ValueError(expected("attentions", "one temporal and one spatial attention per block",
                                      f"{len(self.temporal)} temporal and {len(self.spatial)} spatial"))
        shapes = {tuple(t.shape) for t in self.temporal}, {tuple(s.shape) for s in self.spatial}
        if len(shapes[0]) != 1 or len(shapes[1]) != 1:
            raise ValueError(expected("attentions", "one shape per kind through every block", shapes))
        (rows_t, _, t, t2), (rows_s, _, n1, n2) = next(iter(shapes[0])), next(iter(shapes[1]))
        if t != t2 or n1 != n2 or n1 < 2 or rows_s % t or rows_t != rows_s // t * (n1 - 1):
            raise ValueError(expected("attentions", "temporal (B * N, heads, T, T) and spatial (B * T, heads, "
                                      "1 + N, 1 + N) probabilities", sorted(shapes[0] | shapes[1])))
        for name, grads, like in (("temporal_gradients", self.temporal_gradients, self.temporal),
                                  ("spatial_gradients", self.spatial_gradients, self.spatial)):
            if grads is not None and [g.shape for g in grads] != [a.shape for a in like]:
                raise ValueError(expected(name, "one gradient per probability", [tuple(g.shape) for g in grads]))

    @property
    def frames(self) -> int:
        """``T``."""
        return self.temporal[0].shape[-1]

    @property
    def patches(self) -> int:
        """``N``, patches per frame."""
        return self.spatial[0].shape[-1] - 1

    @property
    def batch(self) -> int:
        """``B``."""
        return self.spatial[0].shape[0] // self.frames

    @property
    def tokens(self) -> int:
        """``M = 1 + T * N``, the clip's tokens."""
        return 1 + self.frames * self.patches

    @property
    def layers(self) -> int:
        """Blocks."""
        return len(self.spatial)

    def spread(self, probes: int | None = None) -> Tensor:
        """Every block's spatial attention over the clip's tokens, ``(probes, layers, heads, M, M)`` (see
        :func:`spread_spatial`), of the first ``probes`` samples (``None``: all).

        Example:
            >>> d = DividedAttention((torch.ones(2 * 4, 1, 3, 3) / 3,), (torch.ones(2 * 3, 1, 5, 5) / 5,))
            >>> d.spread(1).shape
            torch.Size([1, 1, 1, 13, 13])
        """
        rows = self.spatial[0].shape[0] if probes is None else probes * self.frames
        return torch.stack([spread_spatial(s[:rows], self.frames) for s in self.spatial], 1)


def spread_spatial(spatial: Tensor, frames: int) -> Tensor:
    """Per-frame ``(B * T, ..., 1 + N, 1 + N)`` matrices as one ``(B, ..., M, M)`` matrix over the clip's tokens
    (class token, then frame-major patches): each frame's patch rows on the diagonal block of that frame (its class
    column on token 0), the class row the mean over frames of the frames' class rows.

    Example:
        >>> s = torch.tensor([[[0.5, 0.5], [0.25, 0.75]], [[1.0, 0.0], [0.5, 0.5]]])  # two frames, one patch each
        >>> spread_spatial(s, 2).tolist()
        [[[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.5, 0.0, 0.5]]]
    """
    n = spatial.shape[-1] - 1
    per = spatial.reshape(-1, frames, *spatial.shape[1:])  # (B, T, ..., 1 + N, 1 + N)
    out = spatial.new_zeros(per.shape[0], *spatial.shape[1:-2], 1 + frames * n, 1 + frames * n)
    out[..., 0, 0] = per[..., 0, 0].mean(1)
    for t in range(frames):
        span = slice(1 + t * n, 1 + (t + 1) * n)
        out[..., span, 0] = per[:, t, ..., 1:, 0]
        out[..., span, span] = per[:, t, ..., 1:, 1:]
        out[..., 0, span] = per[:, t, ..., 0, 1:] / frames
    return out


def _temporal(step: Tensor, result: Tensor, frames: int) -> Tensor:
    """``𝒯 R`` without the class row: ``(B * N, T, T)`` matrices applied to ``R``'s patch rows, ``(B, T * N, K)``."""
    batch, _, k = result.shape
    n = (result.shape[1] - 1) // frames
    patches = result[:, 1:].reshape(batch, frames, n, k)
    return torch.einsum("bnts,bsnk->btnk", step.reshape(batch, n, frames, frames), patches).reshape(batch, -1, k)


def _spatial(step: Tensor, result: Tensor, frames: int) -> tuple[Tensor, Tensor]:
    """``𝒮 R`` per frame: ``(B * T, 1 + N, 1 + N)`` matrices applied to each frame's class and patch rows of ``R``;
    the class rows ``(B, T, K)`` (one per frame, to be reduced) and the patch rows ``(B, T * N, K)``."""
    batch, _, k = result.shape
    n = (result.shape[1] - 1) // frames
    rows = torch.cat([result[:, None, :1].expand(batch, frames, 1, k),
                      result[:, 1:].reshape(batch, frames, n, k)], 2)  # (B, T, 1 + N, K)
    mixed = step.reshape(batch, frames, n + 1, n + 1) @ rows
    return mixed[:, :, 0], mixed[:, :, 1:].reshape(batch, frames * n, k)


def _residual(attention: Tensor, head_fusion: str, discard_ratio: float) -> Tensor:
    fused = discard_smallest(fuse_heads(attention.float(), head_fusion), discard_ratio)
    step = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
    return step / step.sum(-1, keepdim=True)


def divided_rollout(divided: DividedAttention, head_fusion: str = "mean", discard_ratio: float = 0.0,
                    layer: int | None = None) -> Tensor:
    """Attention rollout through divided space-time attention: ``R = (𝒮_L 𝒯_L) ... (𝒮_1 𝒯_1)`` (the definition is
    the module's docstring).

    Args:
        divided: the captured temporal and spatial attentions.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads, per captured matrix.
        discard_ratio: fraction in ``[0, 1)`` of each captured matrix's smallest off-diagonal entries set to 0.
        layer: the last block multiplied (0-based, negative from the end); ``None``: all.

    Returns:
        The ``(B, M, M)`` rollout (float32) over the class token and the frame-major patches; rows sum to 1.

    Example:
        >>> d = DividedAttention((torch.softmax(torch.randn(2 * 4, 2, 3, 3), -1),),
        ...                      (torch.softmax(torch.randn(2 * 3, 2, 5, 5), -1),))
        >>> r = divided_rollout(d)
        >>> r.shape, torch.allclose(r.sum(-1), torch.ones(2, 13))
        (torch.Size([2, 13, 13]), True)
    """
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise ValueError(expected("discard_ratio", "a number in [0, 1)", discard_ratio))
    frames, m = divided.frames, divided.tokens
    result = torch.eye(m, device=divided.spatial[0].device).expand(divided.batch, m, m)
    for index in range(layers_through(layer, divided.layers)):
        result = torch.cat([result[:, :1], _temporal(_residual(divided.temporal[index], head_fusion,
                                                               float(discard_ratio)), result, frames)], 1)
        cls, patches = _spatial(_residual(divided.spatial[index], head_fusion, float(discard_ratio)), result, frames)
        result = torch.cat([cls.mean(1, keepdim=True), patches], 1)
    return result


def divided_grad_rollout(divided: DividedAttention, layer: int | None = None) -> Tensor:
    """Gradient-weighted rollout (Chefer et al.'s generic rule) through divided space-time attention:
    ``R = Π (I + 𝒮̄_l)(I + 𝒯̄_l)`` with ``Ā = mean_heads(relu(∇A ⊙ A))`` per captured matrix (the definition is the
    module's docstring).

    Args:
        divided: the captured temporal and spatial attentions with their gradients.
        layer: the last block multiplied (0-based, negative from the end); ``None``: all.

    Returns:
        The ``(B, M, M)`` relevance matrix (float32), rows not renormalised.

    Example:
        >>> a = (torch.softmax(torch.randn(2 * 4, 2, 3, 3), -1),), (torch.softmax(torch.randn(2 * 3, 2, 5, 5), -1),)
        >>> d = DividedAttention(*a, tuple(-x for x in a[0]), tuple(-x for x in a[1]))
        >>> torch.equal(divided_grad_rollout(d), torch.eye(13).expand(2, 13, 13))  # no positive evidence: R = I
        True
    """
    if divided.temporal_gradients is None or divided.spatial_gradients is None:
        raise ValueError(expected("divided", "attentions captured with their gradients (gradients=True)", None))
    frames, m = divided.frames, divided.tokens
    result = torch.eye(m, device=divided.spatial[0].device).expand(divided.batch, m, m)
    for index in range(layers_through(layer, divided.layers)):
        temporal = (divided.temporal[index].float() * divided.temporal_gradients[index].float()).clamp(min=0).mean(1)
        result = result + torch.cat([torch.zeros_like(result[:, :1]), _temporal(temporal, result, frames)], 1)
        spatial = (divided.spatial[index].float() * divided.spatial_gradients[index].float()).clamp(min=0).mean(1)
        cls, patches = _spatial(spatial, result, frames)
        result = result + torch.cat([cls.sum(1, keepdim=True), patches], 1)
    return result


def divided_attention(attentions: Sequence[Tensor], kinds: Sequence[str],
                      gradients: Sequence[Tensor] | None = None) -> DividedAttention:
    """Split captured calls (``kinds``: ``"temporal"`` or ``"spatial"`` each, as
    :class:`~lightning_xai.functional.attention.AttentionCapture` records them) into a :class:`DividedAttention`.

    Example:
        >>> a = [torch.ones(8, 1, 3, 3) / 3, torch.ones(6, 1, 5, 5) / 5]
        >>> divided_attention(a, ["temporal", "spatial"]).frames
        3
    """
    if len(kinds) != len(attentions) or set(kinds) != {"temporal", "spatial"}:
        raise ValueError(expected("kinds", "'temporal' or 'spatial' for each captured call", list(kinds)))
    def pick(values: Sequence[Tensor], kind: str) -> tuple[Tensor, ...]:
        return tuple(v for v, k in zip(values, kinds) if k == kind)

    return DividedAttention(pick(attentions, "temporal"), pick(attentions, "spatial"),
                            None if gradients is None else pick(gradients, "temporal"),
                            None if gradients is None else pick(gradients, "spatial"))


def divided_grid(model: nn.Module, patches: int) -> tuple[int, int]:
    """``(grid_h, grid_w)`` of a divided space-time model's ``patches`` per frame: TimeSformer's blocks lay them out
    ``config.image_size // config.patch_size`` patches wide.

    Example:
        >>> divided_grid(nn.Linear(2, 2), 16)  # no such block: a square grid
        (4, 4)
    """
    for module in model.modules():
        config = getattr(module, "config", None)
        if hasattr(module, "temporal_attention") and config is not None and hasattr(config, "patch_size"):
            size, patch = config.image_size, config.patch_size
            width = (size[-1] if isinstance(size, (tuple, list)) else size) // (
                patch[-1] if isinstance(patch, (tuple, list)) else patch)
            if width > 0 and patches % width == 0:
                return patches // width, width
    side = round(patches ** 0.5)
    if side * side != patches:
        raise ValueError(expected("reshape_transform", f"given for {patches} patches per frame (not a square grid)",
                                  None))
    return side, side
