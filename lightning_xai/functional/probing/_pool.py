"""One layer's output to one feature row per sample: find its feature axis, then pool (mean, cls, flatten, max).

Pure torch. The feature axis of a 3-D to 5-D output is read off the module that produced it: the width of its last
module with weights (``out_channels``, ``num_features``, ``out_features``, ``normalized_shape``) matched against
dim 1 (channels first: convolutions, batch norms, ResNet/ConvNeXt blocks) and the last dim (channels last:
transformer tokens ``(B, T, D)``, Swin's ``(B, H, W, C)``); when that does not decide, 3-D outputs are tokens and
4-D/5-D outputs channels first.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lightning_xai._checks import expected

__all__ = ["POOLINGS", "Pooling", "feature_axis", "pool_activations"]

Pooling = Literal["mean", "cls", "flatten", "max"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "flatten", "max")


def _width(module: nn.Module) -> int | None:
    """How many features ``module`` puts out, for the modules that say it; ``None`` otherwise."""
    for attr in ("out_channels", "num_features", "out_features", "embedding_dim"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, (tuple, list)) and shape and isinstance(shape[-1], int):
        return int(shape[-1])
    return None


def feature_axis(module: nn.Module | None, shape: tuple[int, ...]) -> int:
    """The axis of ``shape`` (batch first) that holds features: ``1`` (channels first) or ``len(shape) - 1``.

    Example:
        >>> feature_axis(nn.Conv1d(3, 8, 3), (2, 8, 30)), feature_axis(nn.LayerNorm(16), (2, 5, 16))
        (1, 2)
        >>> feature_axis(None, (2, 5, 16)), feature_axis(None, (2, 8, 4, 4))
        (2, 1)
    """
    if len(shape) <= 2:
        return len(shape) - 1
    widths = [] if module is None else [w for m in module.modules() if (w := _width(m)) is not None]
    width = widths[-1] if widths else None
    first, last = width == shape[1], width == shape[-1]
    if first != last:
        return 1 if first else len(shape) - 1
    return len(shape) - 1 if len(shape) == 3 else 1


def _fit_grid(channels: int, grid: tuple[int, ...], cap: int) -> tuple[int, ...]:
    """The largest grid, shrunk alike on every axis, with ``channels * prod(grid) <= cap`` (at least 1 per axis)."""
    scale = (cap / (channels * math.prod(grid))) ** (1.0 / len(grid))
    sizes = [max(1, int(s * scale)) for s in grid]
    while channels * math.prod(sizes) > cap and max(sizes) > 1:
        axis = max(range(len(sizes)), key=lambda i: sizes[i])
        sizes[axis] -= 1
    return tuple(sizes)


def _flatten(x: Tensor, max_features: int) -> Tensor:
    """``(B, C, *grid)`` flattened; a grid too large for ``max_features`` is average-pooled down to fit first,
    and when the channels alone exceed it, evenly spaced channels of the spatial mean are kept."""
    channels, grid = x.shape[1], tuple(x.shape[2:])
    if channels * math.prod(grid) <= max_features:
        return x.flatten(1)
    if channels > max_features or not grid:
        mean = x.flatten(2).mean(2) if grid else x
        keep = torch.linspace(0, channels - 1, max_features, device=x.device).round().long()
        return mean[:, keep]
    pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[len(grid) - 1]
    return pool(x, _fit_grid(channels, grid, max_features)).flatten(1)


def pool_activations(activation: Tensor, pooling: Pooling = "mean", max_features: int = 4096,
                     axis: int | None = None, mask: Tensor | None = None) -> Tensor:
    """Pool a layer's output ``(B, ...)`` to one float row per sample ``(B, D)``.

    Args:
        activation: The output, batch first: ``(B, D)``, tokens ``(B, T, D)``, maps ``(B, C, H, W)`` or
            ``(B, C, T, H, W)``, or any of these channels last.
        pooling: ``"mean"`` over space, time or tokens; ``"max"`` over them; ``"cls"``: the first token of a
            ``(B, T, D)`` output; ``"flatten"``: every value, with a grid too large for ``max_features`` average-pooled
            down to fit (channels kept; evenly spaced channels when they alone exceed it).
        max_features: The cap on the width of ``"flatten"``.
        axis: The feature axis (default: :func:`feature_axis` without a module: last for 3-D, 1 otherwise).
        mask: ``(B, T)`` attention mask of a token output ``(B, T, D)``: ``"mean"`` and ``"max"`` pool over the
            tokens it keeps only (padding would otherwise pull every padded sentence toward the pad embedding, as
            sentence-transformers' mean pooling avoids); ignored for other shapes.

    Returns:
        ``(B, D)`` float32; a ``(B, D)`` activation is returned as it is (in float32) whatever ``pooling``.

    Raises:
        ValueError: If ``pooling`` is unknown, ``"cls"`` is asked of an output without tokens, or the output has no
            batch dimension or more than 5 dimensions.

    Example:
        >>> x = torch.arange(24.).view(2, 3, 4)  # two samples, 3 tokens of width 4
        >>> pool_activations(x, "mean").tolist()
        [[4.0, 5.0, 6.0, 7.0], [16.0, 17.0, 18.0, 19.0]]
        >>> pool_activations(x, "cls").tolist()
        [[0.0, 1.0, 2.0, 3.0], [12.0, 13.0, 14.0, 15.0]]
        >>> pool_activations(torch.ones(2, 8, 4, 4), "flatten", max_features=32).shape
        torch.Size([2, 32])
        >>> pool_activations(x, "mean", mask=torch.tensor([[1, 1, 0], [1, 0, 0]])).tolist()  # padding left out
        [[2.0, 3.0, 4.0, 5.0], [12.0, 13.0, 14.0, 15.0]]
    """
    if pooling not in POOLINGS:
        raise ValueError(expected("pooling", f"one of {list(POOLINGS)}", pooling))
    if activation.dim() < 2 or activation.dim() > 5:
        raise ValueError(expected("activation", "a batch-first output of 2 to 5 dimensions", tuple(activation.shape)))
    x = activation.detach().float()
    if x.dim() == 2:
        return x
    axis = feature_axis(None, tuple(x.shape)) if axis is None else axis % x.dim()
    if pooling == "cls":
        if x.dim() != 3 or axis != 2:
            raise ValueError(expected("pooling", "'cls' only for token outputs (B, T, D); use 'mean' or 'max' for "
                                      "feature maps", f"'cls' for an output of shape {tuple(x.shape)}"))
        return x[:, 0]
    if pooling == "flatten" and x[0].numel() <= max_features:
        return x.flatten(1)  # in the output's own order
    tokens = mask is not None and x.dim() == 3 and axis == 2 and tuple(mask.shape) == tuple(x.shape[:2])
    if tokens and pooling in ("mean", "max"):
        keep = mask.to(x.device).bool().unsqueeze(-1)  # type: ignore[union-attr]
        if pooling == "mean":
            return (x * keep).sum(1) / keep.sum(1).clamp_min(1)
        return x.masked_fill(~keep, float("-inf")).amax(1).nan_to_num(neginf=0.0)
    x = x.movedim(axis, 1)
    if pooling == "mean":
        return x.flatten(2).mean(2)
    if pooling == "max":
        return x.flatten(2).amax(2)
    return _flatten(x, max_features)
