"""Heatmap overlays: images or clips with their attribution maps on top, as matplotlib figures.

Inputs are tensors (any device, any float dtype); heatmaps are expected in [0, 1] (normalise them upstream,
in ``functional``), values outside are clipped by the colour map, and NaN/inf are left transparent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Colormap, Normalize
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import check_positive_int, check_probability, expected
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    TITLE_FONTSIZE,
    check_titles,
    new_figure,
    wrap_text,
    wrap_titles,
)

__all__ = ["infer_normalization", "denormalize", "overlay_grid"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
COLORBAR_LABEL = "attribution (normalised)"


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


def _colormap(cmap: Any) -> Colormap:
    if isinstance(cmap, Colormap):
        base = cmap
    elif isinstance(cmap, str) and cmap in matplotlib.colormaps:
        base = matplotlib.colormaps[cmap]
    else:
        allowed = "a matplotlib colormap or its name, such as 'jet' or 'inferno'"
        raise ValueError(expected("cmap", allowed, cmap))
    return base.with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


def _heatmaps(heatmaps: Any, lead: tuple[int, ...], size: tuple[int, int], layout: str) -> np.ndarray:
    """Heatmaps as a float array ``(*lead, H, W)`` at the images' size, non-finite values kept as NaN."""
    if not isinstance(heatmaps, Tensor):
        raise TypeError(expected("heatmaps", "a torch.Tensor", type(heatmaps).__name__))
    maps = heatmaps.detach().cpu().float()
    if maps.ndim == len(lead) + 3 and maps.shape[len(lead)] == 1:
        maps = maps.squeeze(len(lead))
    if maps.ndim != len(lead) + 2 or tuple(maps.shape[: len(lead)]) != lead:
        raise ValueError(expected("heatmaps", f"a tensor of shape {layout} with leading dimensions {lead}",
                                  tuple(heatmaps.shape)))
    if tuple(maps.shape[-2:]) != size:
        flat = maps.reshape(-1, 1, *maps.shape[-2:])
        finite = torch.isfinite(flat)
        resized = F.interpolate(torch.where(finite, flat, torch.zeros_like(flat)), size=size, mode="bilinear",
                                align_corners=False)
        keep = F.interpolate(finite.float(), size=size, mode="nearest") > 0.5
        maps = torch.where(keep, resized, torch.full_like(resized, math.nan)).reshape(*lead, *size)
    maps = torch.where(torch.isfinite(maps), maps, torch.full_like(maps, math.nan))
    return maps.numpy()


def _check_range(vmin: Any, vmax: Any) -> tuple[float, float]:
    """``(vmin, vmax)`` as floats if both are finite numbers with ``vmin < vmax``."""
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(expected(name, "a finite number", value))
    if not vmin < vmax:
        raise ValueError(expected("vmax", f"larger than `vmin` ({vmin})", vmax))
    return float(vmin), float(vmax)


def _extend(maps: np.ndarray, vmin: float, vmax: float) -> str:
    """Colour bar ``extend``: arrows on the ends that finite values run past (they are clipped)."""
    finite = maps[np.isfinite(maps)]
    if finite.size == 0:
        return "neither"
    below, above = bool(finite.min() < vmin), bool(finite.max() > vmax)
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")


def _draw_tile(
    ax: Any,
    image: np.ndarray,
    heatmap: np.ndarray,
    cmap: Colormap,
    alpha: float,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.imshow(np.ma.masked_invalid(heatmap), cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha,
              interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _colorbar(
    fig: Figure,
    axes: Any,
    cmap: Colormap,
    rows: int,
    vmin: float = 0.0,
    vmax: float = 1.0,
    label: str = COLORBAR_LABEL,
    extend: str = "neither",
) -> None:
    mappable = ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap)
    bar = fig.colorbar(mappable, ax=axes, shrink=0.9 if rows > 1 else 1.0, aspect=max(12.0, 10.0 * rows),
                       pad=0.02, extend=extend)
    bar.set_label(label, fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)


def _tile_inches(count: int) -> float:
    """Side of one tile: large for a handful of images, smaller (never tiny) for many."""
    if count <= 4:
        return 2.6
    if count <= 16:
        return 2.2
    return 1.8


def overlay_grid(
    images: Tensor,
    heatmaps: Tensor,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    ncols: int = 4,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    colorbar_label: str = COLORBAR_LABEL,
) -> Figure:
    """A grid of images, each with its heatmap overlaid, one shared colour bar.

    Args:
        images: Images ``(B, C, H, W)``, normalised or not (see :func:`denormalize`).
        heatmaps: Maps ``(B, H', W')`` or ``(B, 1, H', W')`` with values in [0, 1]; resized (bilinear) to the
            images' size if needed. NaN/inf pixels are drawn transparent.
        titles: One title per tile, e.g. ``"true: circle | pred: circle (0.97)"``; long titles are wrapped.
        suptitle: Figure title, e.g. ``"Grad-CAM++ · epoch 3 · step 120"``.
        ncols: Maximum tiles per row.
        alpha: Opacity of the heatmap over the image.
        cmap: Matplotlib colour map (name or object) of the heatmap.
        mean: Per-channel mean the images were normalised with (inferred when both are None).
        std: Per-channel standard deviation the images were normalised with.
        vmin: Heatmap value at the bottom of the colour map (e.g. ``-limit`` for signed maps).
        vmax: Heatmap value at the top of the colour map; values outside ``[vmin, vmax]`` are clipped and the
            colour bar gets an arrow on that end.
        colorbar_label: Label of the colour bar.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot involved).

    Raises:
        TypeError: If ``images``/``heatmaps`` are not tensors, ``titles`` is not a sequence of strings or
            ``vmin``/``vmax`` is not a finite number.
        ValueError: On mismatched shapes, a wrong number of titles or an invalid option.

    Example:
        >>> images, heatmaps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> fig = overlay_grid(images, heatmaps, titles=["a", "b"], suptitle="demo")
        >>> len(fig.axes)  # two tiles and the colour bar
        3
    """
    if not isinstance(images, Tensor):
        raise TypeError(expected("images", "a torch.Tensor", type(images).__name__))
    if images.ndim != 4 or images.numel() == 0:
        raise ValueError(expected("images", "a non-empty tensor of shape (B, C, H, W)", tuple(images.shape)))
    check_positive_int("ncols", ncols)
    alpha = check_probability("alpha", alpha)
    colormap = _colormap(cmap)
    vmin, vmax = _check_range(vmin, vmax)
    count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    maps = _heatmaps(heatmaps, (count,), (height, width), "(B, H, W) or (B, 1, H, W)")
    labels = check_titles("titles", titles, count)
    pixels = denormalize(images, mean, std).permute(0, 2, 3, 1).numpy()

    cols = min(ncols, count)
    rows = math.ceil(count / cols)
    tile = _tile_inches(count)
    tile_h = tile * height / width
    wrapped = wrap_titles(labels, tile) if labels else None
    title_lines = max((t.count("\n") + 1 for t in wrapped), default=0) if wrapped else 0
    title_h = title_lines * TITLE_FONTSIZE * 1.35 / 72.0
    fig_w = cols * (tile + 0.1) + 1.0
    fig_h = rows * (tile_h + title_h + 0.1) + (0.45 if suptitle else 0.1)
    fig = new_figure(fig_w, fig_h)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.set_axis_off()
            continue
        _draw_tile(ax, pixels[i], maps[i], colormap, alpha, vmin, vmax)
        if wrapped:
            ax.set_title(wrapped[i], fontsize=TITLE_FONTSIZE)
    _colorbar(fig, axes, colormap, rows, vmin, vmax, str(colorbar_label), _extend(maps, vmin, vmax))
    if suptitle:
        fig.suptitle(wrap_text(suptitle, fig_w, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig

