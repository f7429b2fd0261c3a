"""Undoing input normalisation: displayable RGB images in [0, 1], ImageNet statistics guessed if needed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai._checks import expected

__all__ = ["denormalize", "infer_normalization"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def infer_normalization(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Guess how ``images`` were normalised: ImageNet statistics if they reach below 0, else none.

    Pixels in [0, 1] (or [0, 255]) need no undoing. Values below -0.1 mean a mean was subtracted; the ImageNet
    mean and standard deviation are then by far the most common choice. For one-channel images the channel
    averages of the ImageNet statistics are returned. Pass ``mean``/``std`` explicitly when you know them.

    Args:
        images: Images ``(B, C, H, W)`` (any shape works: only the values are looked at).

    Returns:
        ``(mean, std)`` tuples, or None when the images look unnormalised.

    Example:
        >>> infer_normalization(torch.rand(2, 3, 4, 4)) is None
        True
        >>> infer_normalization(torch.full((1, 3, 2, 2), -1.5))
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    """
    if not isinstance(images, Tensor):
        raise TypeError(expected("images", "a torch.Tensor", type(images).__name__))
    if images.numel() == 0 or not images.is_floating_point():
        return None
    values = images.detach()
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0 or finite.min().item() >= -0.1:
        return None
    if images.ndim >= 3 and images.shape[-3] == 1:
        return (round(sum(IMAGENET_MEAN) / 3, 3),), (round(sum(IMAGENET_STD) / 3, 3),)
    return IMAGENET_MEAN, IMAGENET_STD


def _stats(name: str, values: Sequence[float] | None, channels: int, default: float) -> Tensor:
    if values is None:
        return torch.full((channels,), default)
    if isinstance(values, (int, float)):
        values = (float(values),)
    try:
        stats = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise TypeError(expected(name, "a sequence of floats or None", values)) from None
    if stats.numel() == 1:
        return stats.expand(channels)
    if stats.numel() < channels:
        allowed = f"a sequence of 1 or at least {channels} floats (one per channel)"
        raise ValueError(expected(name, allowed, values))
    return stats[:channels]


def denormalize(
    images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> Tensor:
    """Undo normalisation and return displayable RGB images in [0, 1].

    ``image * std + mean`` per channel, then clipped to [0, 1]. When neither ``mean`` nor ``std`` is given
    they are inferred with :func:`infer_normalization`; images that then still reach above 1.5 are taken to
    be on the [0, 255] scale, as are ``uint8`` images. One-channel images are repeated to grey RGB; images
    with more than 3 channels keep the first 3 (2-channel images keep the first). NaN and inf become 0.

    Args:
        images: Images ``(B, C, H, W)``.
        mean: Per-channel mean that was subtracted (1 value, or one per channel), or None.
        std: Per-channel standard deviation that was divided by, or None.

    Returns:
        Float tensor ``(B, 3, H, W)`` in [0, 1], on the CPU.

    Raises:
        TypeError: If ``images`` is not a tensor.
        ValueError: If ``images`` is not 4-dimensional or ``mean``/``std`` has the wrong length.

    Example:
        >>> x = torch.rand(2, 3, 4, 4)
        >>> mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
        >>> normalised = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        >>> torch.allclose(denormalize(normalised, mean, std), x, atol=1e-6)
        True
        >>> denormalize(torch.rand(1, 1, 4, 4)).shape
        torch.Size([1, 3, 4, 4])
    """
    if not isinstance(images, Tensor):
        raise TypeError(expected("images", "a torch.Tensor", type(images).__name__))
    if images.ndim != 4 or images.numel() == 0:
        raise ValueError(expected("images", "a non-empty tensor of shape (B, C, H, W)", tuple(images.shape)))
    x = images.detach().cpu()
    channels = 3 if x.shape[1] >= 3 else 1
    x = x[:, :channels]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    if mean is None and std is None:
        inferred = infer_normalization(x)
        if inferred is not None:
            mean, std = inferred
        elif x.max().item() > 1.5:
            x = x / 255.0
    m = _stats("mean", mean, channels, 0.0).view(1, channels, 1, 1)
    s = _stats("std", std, channels, 1.0).view(1, channels, 1, 1)
    x = (x * s + m).clamp(0.0, 1.0)
    return x.expand(-1, 3, -1, -1).contiguous() if channels == 1 else x
