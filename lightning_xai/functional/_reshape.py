"""Reshape transforms: token or channels-last activations of vision transformers to ``(B, C, h, w)`` maps.

Importable top-level functions, so YAML can name them (``reshape_transform: lightning_xai.functional.vit_reshape_transform``).
"""

from __future__ import annotations

import math

import torch  # noqa: F401 - the docstring examples use it
from torch import Tensor

from lightning_xai._checks import expected

_MAX_PREFIX_TOKENS = 8

__all__ = ['swin_reshape_transform', 'vit_reshape_transform']


# --------------------------------------------------------------------------------------------- reshapes
def vit_reshape_transform(tensor: Tensor, num_prefix_tokens: int | None = None,
                          grid: tuple[int, int] | None = None) -> Tensor:
    """Turn ViT tokens ``(B, N, D)`` into a channels-first map ``(B, D, h, w)``, dropping the prefix tokens.

    Args:
        tensor: Token sequence ``(B, N, D)``: ``num_prefix_tokens`` class/distillation/register tokens
            followed by ``h * w`` patch tokens in row-major order.
        num_prefix_tokens: Number of leading non-patch tokens. ``None`` infers it as ``N - s**2`` for the
            largest square ``s**2 <= N``, provided that leaves at most 8 prefix tokens.
        grid: ``(h, w)`` of a non-square patch grid (default square).

    Returns:
        The patch tokens as a ``(B, D, s, s)`` map.

    Raises:
        ValueError: If ``tensor`` is not 3-D, or the patch tokens do not form a square grid.

    Example:
        >>> vit_reshape_transform(torch.zeros(2, 1 + 16, 8)).shape
        torch.Size([2, 8, 4, 4])
        >>> vit_reshape_transform(torch.zeros(2, 5 + 8, 8), grid=(2, 4)).shape  # CLS + 4 registers, 2 x 4 patches
        torch.Size([2, 8, 2, 4])
    """
    if not isinstance(tensor, Tensor) or tensor.ndim != 3:
        got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(expected("tensor", "a (batch, tokens, dim) tensor of ViT tokens", got))
    num_tokens = tensor.shape[1]
    if grid is not None:
        rows, cols = grid
        prefix = num_tokens - rows * cols if num_prefix_tokens is None else num_prefix_tokens
        if prefix < 0 or prefix + rows * cols != num_tokens:
            raise ValueError(expected("reshape_transform", f"a grid {rows} x {cols} plus {prefix} prefix tokens "
                                      f"that make the layer's {num_tokens} tokens (set `target_layer=` to the "
                                      "layer of the image tokens, or give `reshape_transform=`)", grid))
        patches = tensor[:, prefix:, :]
        return patches.reshape(tensor.shape[0], rows, cols, tensor.shape[2]).permute(0, 3, 1, 2)
    if num_prefix_tokens is None:
        side = math.isqrt(num_tokens)
        num_prefix_tokens = num_tokens - side * side
        if num_prefix_tokens > _MAX_PREFIX_TOKENS:
            raise ValueError(
                expected(
                    "reshape_transform",
                    f"given explicitly (e.g. functools.partial(vit_reshape_transform, num_prefix_tokens=..., "
                    f"grid=(h, w))): the layer's {num_tokens} tokens are not a square grid plus at most "
                    f"{_MAX_PREFIX_TOKENS} prefix tokens",
                    "vit_reshape_transform",
                )
            )
    elif type(num_prefix_tokens) is not int or num_prefix_tokens < 0:
        raise ValueError(expected("num_prefix_tokens", "an integer of at least 0 or None", num_prefix_tokens))
    side = math.isqrt(max(num_tokens - num_prefix_tokens, 0))
    if side == 0 or side * side != num_tokens - num_prefix_tokens:
        raise ValueError(
            expected(
                "reshape_transform",
                f"a transform for the layer's {num_tokens} tokens (vit_reshape_transform with "
                f"num_prefix_tokens={num_prefix_tokens} leaves no square grid: set `target_layer=` to the layer of "
                "the image tokens, or give `reshape_transform=` with num_prefix_tokens= and grid=(h, w))",
                "vit_reshape_transform",
            )
        )
    patches = tensor[:, num_prefix_tokens:, :]
    return patches.reshape(tensor.shape[0], side, side, tensor.shape[2]).permute(0, 3, 1, 2)


def swin_reshape_transform(tensor: Tensor) -> Tensor:
    """Turn Swin features into a channels-first map ``(B, C, H, W)``.

    Args:
        tensor: Either a channels-last map ``(B, H, W, C)`` (torchvision Swin) or tokens ``(B, H*W, C)`` of a
            square grid (Hugging Face Swin).

    Returns:
        The ``(B, C, H, W)`` map.

    Raises:
        ValueError: If ``tensor`` is neither 4-D nor 3-D with a square number of tokens.

    Example:
        >>> swin_reshape_transform(torch.zeros(2, 4, 4, 8)).shape
        torch.Size([2, 8, 4, 4])
        >>> swin_reshape_transform(torch.zeros(2, 16, 8)).shape
        torch.Size([2, 8, 4, 4])
    """
    if isinstance(tensor, Tensor) and tensor.ndim == 4:
        return tensor.permute(0, 3, 1, 2)
    if isinstance(tensor, Tensor) and tensor.ndim == 3:
        side = math.isqrt(tensor.shape[1])
        if side * side == tensor.shape[1]:
            return tensor.reshape(tensor.shape[0], side, side, tensor.shape[2]).permute(0, 3, 1, 2)
    got = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
    raise ValueError(
        expected("tensor", "a channels-last (B, H, W, C) map or (B, H*W, C) tokens of a square grid", got)
    )


# ----------------------------------------------------------------------------------------- resolve_layer
