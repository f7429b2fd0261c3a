"""Defaults per input kind: blurred baselines, occlusion windows, feature-ablation patches. Pure torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ablation_mask", "blur", "occlusion_window", "patch_size"]


def blur(x: Tensor, sigma: float | None = None) -> Tensor:
    """``x`` (``(B, ..., H, W)``) blurred over its last two dims by a Gaussian of ``sigma`` pixels (default: the
    shorter side over 8), edges replicated: the "blur" baseline of integrated gradients.

    Example:
        >>> x = torch.zeros(1, 1, 9, 9); x[..., 4, 4] = 1.0
        >>> b = blur(x, 1.0)
        >>> b.shape, bool(b[..., 4, 4] < 1.0), round(float(b.sum()), 4)
        (torch.Size([1, 1, 9, 9]), True, 1.0)
    """
    h, w = x.shape[-2:]
    sigma = float(sigma) if sigma is not None else max(1.0, min(h, w) / 8)
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    flat = x.reshape(-1, 1, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1))
    flat = F.conv2d(flat, kernel.view(1, 1, -1, 1))
    return flat.reshape(x.shape)


def patch_size(h: int, w: int) -> tuple[int, int]:
    """Patch (and occlusion window) of an ``h x w`` image: an eighth of each side, at least 1 pixel.

    Example:
        >>> patch_size(32, 32), patch_size(5, 64)
        ((4, 4), (1, 8))
    """
    return max(1, round(h / 8)), max(1, round(w / 8))


def occlusion_window(shape: tuple[int, ...], kind: str, layout: str | None = None,
                     patch: tuple[int, int] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(window, stride)`` of occlusion for one sample of ``shape`` (no batch dim; tokens as ``(L, D)``
    embeddings): one token, one tabular feature, or a patch (an eighth of each side, all channels, one frame of a
    clip) moved by half a patch.

    Example:
        >>> occlusion_window((3, 32, 32), "image"), occlusion_window((7, 16), "tokens")
        (((3, 4, 4), (3, 2, 2)), ((1, 16), (1, 16)))
    """
    if kind == "tokens":
        return (1, *shape[1:]), (1, *shape[1:])
    if kind == "tabular" or len(shape) < 2:
        return (1,) * len(shape), (1,) * len(shape)
    ph, pw = patch or patch_size(*shape[-2:])
    sh, sw = max(1, ph // 2), max(1, pw // 2)
    lead = tuple(shape[:-2])
    if kind == "video" and len(shape) == 4:  # one frame, every channel
        lead = (1, shape[1]) if layout == "BTCHW" else (shape[0], 1)
    return (*lead, ph, pw), (*lead, sh, sw)


def ablation_mask(shape: tuple[int, ...], kind: str, layout: str | None = None,
                  patch: tuple[int, int] | None = None) -> Tensor:
    """Feature ids of one sample of ``shape`` (batch dim 1, broadcast over channels and the embedding dim): one id
    per token, per tabular element, or per patch (per frame for clips).

    Example:
        >>> ablation_mask((1, 4, 4), "image", patch=(2, 2))[0, 0].tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
        >>> ablation_mask((3, 8), "tokens").shape
        torch.Size([1, 3, 1])
    """
    if kind == "tokens":
        return torch.arange(shape[0]).view(1, shape[0], *([1] * (len(shape) - 1)))
    if kind == "tabular" or len(shape) < 2:
        return torch.arange(math.prod(shape)).view(1, *shape)
    h, w = shape[-2:]
    ph, pw = patch or patch_size(h, w)
    cols = -(-w // pw)
    ids = (torch.arange(h)[:, None] // ph) * cols + torch.arange(w)[None, :] // pw  # (H, W)
    per = int(ids.max()) + 1
    if kind == "video" and len(shape) == 4:  # (C, T, H, W) or (T, C, H, W): patches per frame
        frames = shape[0] if layout == "BTCHW" else shape[1]
        ids = torch.arange(frames).view(frames, 1, 1) * per + ids
        return ids.view(1, frames, 1, h, w) if layout == "BTCHW" else ids.view(1, 1, frames, h, w)
    return ids.view(1, *([1] * (len(shape) - 2)), h, w)
