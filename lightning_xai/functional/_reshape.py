"""Reshape transforms: token or channels-last activations of transformers to channels-first maps.

Importable top-level functions, so YAML can name them (``reshape_transform: lightning_xai.functional.vit_reshape_transform``)
and pass their keyword arguments (``GradCAMCallback(reshape_kwargs={"grid": [4, 8], "num_prefix_tokens": 1})``).
Every error names ``reshape_transform`` / ``target_layer``, the arguments a user sets, and says what to set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch  # noqa: F401 - the docstring examples use it
from torch import Tensor

from lightning_xai._checks import expected

_MAX_PREFIX_TOKENS = 8

__all__ = ["swin_reshape_transform", "token_reshape_transform", "video_reshape_transform", "vit_reshape_transform"]

_HINT = ("set `target_layer=` to a layer of the input's tokens, or give `reshape_transform=` (with "
         "`reshape_kwargs=`) for its grid")


def _shape(tensor: object) -> object:
    return tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__


def _check_grid(grid: object) -> tuple[int, ...]:
    if not isinstance(grid, Sequence) or not grid or not all(type(g) is int and g > 0 for g in grid):
        raise ValueError(expected("reshape_transform", "given a grid of positive integers, e.g. grid=(14, 14)", grid))
    return tuple(grid)


def token_reshape_transform(tensor: Tensor, grid: Sequence[int], num_prefix_tokens: int = 0,
                            axes: Sequence[int] | None = None) -> Tensor:
    """Turn tokens ``(B, N, D)`` into a channels-first map ``(B, D, *grid)``, dropping the prefix tokens.

    The general form of the transforms below: any grid (1-D frames, 2-D patches, 3-D tubelets) and any order.

    Args:
        tensor: ``(B, N, D)``: ``num_prefix_tokens`` class/distillation/register tokens, then ``prod(grid)`` tokens
            in row-major order of ``grid``.
        grid: The token grid in the order the tokens run (AST: ``(frequency, time)`` patches).
        num_prefix_tokens: Leading non-grid tokens to drop.
        axes: Order of the grid axes in the map, e.g. ``(1, 0)`` for AST, whose input is ``(time, frequency)``
            but whose tokens run frequency-major; default the grid's order.

    Returns:
        The ``(B, D, *grid[axes])`` map.

    Raises:
        ValueError: If the tokens do not make that grid (the message says what to set).

    Example:
        >>> token_reshape_transform(torch.zeros(2, 2 + 3 * 5, 8), grid=(3, 5), num_prefix_tokens=2, axes=(1, 0)).shape
        torch.Size([2, 8, 5, 3])
    """
    grid = _check_grid(grid)
    if type(num_prefix_tokens) is not int or num_prefix_tokens < 0:
        raise ValueError(expected("reshape_transform", "given num_prefix_tokens >= 0", num_prefix_tokens))
    order = tuple(range(len(grid))) if axes is None else tuple(axes)
    if sorted(order) != list(range(len(grid))):
        raise ValueError(expected("reshape_transform", f"given axes that order the {len(grid)} grid axes", axes))
    cells = math.prod(grid)
    if not isinstance(tensor, Tensor) or tensor.ndim != 3 or tensor.shape[1] != num_prefix_tokens + cells:
        allowed = (f"a transform for this layer's output, which is not (batch, {num_prefix_tokens} + "
                   f"{' x '.join(map(str, grid))} tokens, dim): {_HINT}")
        raise ValueError(expected("reshape_transform", allowed, _shape(tensor)))
    patches = tensor[:, num_prefix_tokens:, :].reshape(tensor.shape[0], *grid, tensor.shape[2])
    return patches.permute(0, len(grid) + 1, *(1 + a for a in order))


def vit_reshape_transform(tensor: Tensor, num_prefix_tokens: int | None = None,
                          grid: Sequence[int] | None = None) -> Tensor:
    """Turn ViT tokens ``(B, N, D)`` into a channels-first map ``(B, D, h, w)``, dropping the prefix tokens.

    Args:
        tensor: Token sequence ``(B, N, D)``: ``num_prefix_tokens`` class/distillation/register tokens
            followed by ``h * w`` patch tokens in row-major order.
        num_prefix_tokens: Number of leading non-patch tokens. ``None`` infers it: ``N - h * w`` with ``grid``,
            else ``N - s**2`` for the largest square ``s**2 <= N``, provided that leaves at most 8 prefix tokens.
        grid: ``(h, w)`` of a non-square patch grid (default square).

    Returns:
        The patch tokens as a ``(B, D, h, w)`` map.

    Raises:
        ValueError: If ``tensor`` is not 3-D or its tokens make no such grid; the message names
            ``reshape_transform``/``target_layer`` and what to set.

    Example:
        >>> vit_reshape_transform(torch.zeros(2, 1 + 16, 8)).shape
        torch.Size([2, 8, 4, 4])
        >>> vit_reshape_transform(torch.zeros(2, 5 + 8, 8), grid=(2, 4)).shape  # CLS + 4 registers, 2 x 4 patches
        torch.Size([2, 8, 2, 4])
    """
    if not isinstance(tensor, Tensor) or tensor.ndim != 3:
        allowed = f"a transform for this layer's output, which is not (batch, tokens, dim): {_HINT}"
        raise ValueError(expected("reshape_transform", allowed, _shape(tensor)))
    num_tokens = tensor.shape[1]
    if grid is not None:
        grid = _check_grid(grid)
        prefix = num_tokens - math.prod(grid) if num_prefix_tokens is None else num_prefix_tokens
        return token_reshape_transform(tensor, grid, max(prefix, 0) if num_prefix_tokens is None else prefix)
    if num_prefix_tokens is None:
        side = math.isqrt(num_tokens)
        num_prefix_tokens = num_tokens - side * side
        if num_prefix_tokens > _MAX_PREFIX_TOKENS:
            allowed = (f"given grid=(h, w) for this layer's {num_tokens} tokens, which are not a square grid plus at "
                       f"most {_MAX_PREFIX_TOKENS} prefix tokens: {_HINT}")
            raise ValueError(expected("reshape_transform", allowed, "vit_reshape_transform"))
    elif type(num_prefix_tokens) is not int or num_prefix_tokens < 0:
        raise ValueError(expected("reshape_transform", "given num_prefix_tokens >= 0 or None", num_prefix_tokens))
    side = math.isqrt(max(num_tokens - num_prefix_tokens, 0))
    if side == 0 or side * side != num_tokens - num_prefix_tokens:
        allowed = (f"a transform for this layer's {num_tokens} tokens (num_prefix_tokens={num_prefix_tokens} leaves "
                   f"no square grid; give grid=(h, w)): {_HINT}")
        raise ValueError(expected("reshape_transform", allowed, "vit_reshape_transform"))
    return token_reshape_transform(tensor, (side, side), num_prefix_tokens)


def video_reshape_transform(tensor: Tensor, grid: Sequence[int], num_prefix_tokens: int = 0) -> Tensor:
    """Turn video transformer tokens ``(B, N, D)`` into a channels-first clip map ``(B, D, t, h, w)``.

    For VideoMAE (tubelets: ``t`` = frames / tubelet size, no class token) and MViT (one class token).

    Args:
        tensor: ``(B, N, D)`` tokens: ``num_prefix_tokens`` leading non-patch tokens, then ``t * h * w`` patch tokens
            in (time, row, column) order.
        grid: ``(t, h, w)``.
        num_prefix_tokens: class/register tokens to drop.

    Returns:
        The ``(B, D, t, h, w)`` map.

    Raises:
        ValueError: If the tokens do not make that grid (the message names ``reshape_transform``).

    Example:
        >>> video_reshape_transform(torch.zeros(2, 2 * 4 * 4, 8), grid=(2, 4, 4)).shape
        torch.Size([2, 8, 2, 4, 4])
    """
    grid = _check_grid(grid)
    if len(grid) != 3:
        raise ValueError(expected("reshape_transform", "given grid=(t, h, w)", grid))
    return token_reshape_transform(tensor, grid, num_prefix_tokens)


def swin_reshape_transform(tensor: Tensor) -> Tensor:
    """Turn Swin features into a channels-first map ``(B, C, H, W)`` (``(B, C, T, H, W)`` for Swin3D).

    Args:
        tensor: A channels-last map ``(B, H, W, C)`` (torchvision Swin), a channels-last clip ``(B, T, H, W, C)``
            (torchvision Swin3D), or tokens ``(B, H*W, C)`` of a square grid (Hugging Face Swin).

    Returns:
        The channels-first map.

    Raises:
        ValueError: For any other shape (the message names ``reshape_transform``/``target_layer``).

    Example:
        >>> swin_reshape_transform(torch.zeros(2, 4, 4, 8)).shape
        torch.Size([2, 8, 4, 4])
        >>> swin_reshape_transform(torch.zeros(2, 16, 8)).shape
        torch.Size([2, 8, 4, 4])
        >>> swin_reshape_transform(torch.zeros(2, 2, 4, 4, 8)).shape
        torch.Size([2, 8, 2, 4, 4])
    """
    if isinstance(tensor, Tensor) and tensor.ndim in (4, 5):
        return tensor.movedim(-1, 1)
    if isinstance(tensor, Tensor) and tensor.ndim == 3:
        side = math.isqrt(tensor.shape[1])
        if side * side == tensor.shape[1]:
            return token_reshape_transform(tensor, (side, side))
    allowed = ("a transform for this layer's output, which is no channels-last (B, H, W, C) map, (B, T, H, W, C) "
               f"clip or (B, H*W, C) tokens of a square grid: {_HINT}")
    raise ValueError(expected("reshape_transform", allowed, _shape(tensor)))
