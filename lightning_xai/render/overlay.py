"""Heatmap overlays: images or clips with their attribution maps on top, as matplotlib figures.

Inputs are tensors (any device, any float dtype); heatmaps are expected in [0, 1] (normalise them upstream,
in ``functional``), values outside are clipped by the colour map, and NaN/inf are left transparent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch  # noqa: F401  (the docstring examples use it)
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import check_positive_int, check_probability, expected
from lightning_xai.render._grid import colorbar_axes
from lightning_xai.render._mosaic import TileMosaic
from lightning_xai.render._normalization import denormalize, infer_normalization
from lightning_xai.render._overlay_tiles import (
    COLORBAR_LABEL,
    _check_range,
    _colorbar,
    _colormap,
    _draw_tile,
    _extend,
    _heatmaps,
    _mosaic_tiles,
    _tile_inches,
)
from lightning_xai.render._utils import (
    SUPTITLE_FONTSIZE,
    TITLE_FONTSIZE,
    check_titles,
    new_figure,
    wrap_text,
    wrap_titles,
)

# isort: split
# Defined in (or imported by) this module before it was split; re-exported so existing imports keep working.
from lightning_xai.render._normalization import IMAGENET_MEAN, IMAGENET_STD, _stats  # noqa: F401
from lightning_xai.render._utils import LABEL_FONTSIZE, TICK_FONTSIZE  # noqa: F401

__all__ = ["denormalize", "infer_normalization", "overlay_grid"]


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
    axis_labels: tuple[str, str] | None = None,
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
        axis_labels: ``(x label, y label)`` to draw the tiles with labelled axes and row 0 at the bottom
            (a spectrogram: ``("time frame", "frequency bin")``, frequency up); default photos without axes.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot involved). Photos (no
        ``axis_labels``) are tiles of ONE axes (``fig.axes[0]``, axis off, data coordinates in inches), row by
        row: the images composed into its first image, the heatmaps over them (their values in its ``tiles``,
        its ``get_clim()`` the range) composed into its second one (both
        :class:`~lightning_xai.render._mosaic.TileImage`), or, where a tile shows its map less than 3 times
        enlarged, one image each; each title is a text above its tile; ``fig.axes[1]`` is the colour bar. With
        ``axis_labels`` each tile is an axes of its own, the colour bar last.

    Raises:
        TypeError: If ``images``/``heatmaps`` are not tensors, ``titles`` is not a sequence of strings or
            ``vmin``/``vmax`` is not a finite number.
        ValueError: On mismatched shapes, a wrong number of titles or an invalid option.

    Example:
        >>> images, heatmaps = torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
        >>> fig = overlay_grid(images, heatmaps, titles=["a", "b"], suptitle="demo")
        >>> len(fig.axes), len(fig.axes[0].get_images())  # the tiles' axes (photos, heatmaps), the bar's
        (2, 2)
    """
    if not isinstance(images, Tensor):
        raise TypeError(expected("images", "a torch.Tensor", type(images).__name__))
    if images.ndim != 4 or images.numel() == 0:
        raise ValueError(expected("images", "a non-empty tensor of shape (B, C, H, W)", tuple(images.shape)))
    check_positive_int("ncols", ncols)
    if axis_labels is not None and (
        not isinstance(axis_labels, (tuple, list))
        or len(axis_labels) != 2
        or not all(isinstance(a, str) for a in axis_labels)
    ):
        raise TypeError(expected("axis_labels", "None or two strings (x label, y label)", axis_labels))
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
    extend = _extend(maps, vmin, vmax)
    if axis_labels is None:  # photos: tiles of one axes (render/_mosaic.py), texts measured once, no layout engine
        fig = new_figure(1.0, 1.0, layout=None)
        mosaic = TileMosaic(fig, rows, cols)
        for i, title in enumerate(wrapped or ()):
            mosaic.title(i // cols, i % cols, title, TITLE_FONTSIZE)
        bar = _colorbar(fig, None, colormap, rows, vmin, vmax, str(colorbar_label), extend, cax=colorbar_axes(fig))
        grid_w = cols * (tile + 0.1) + 1.0
        top = fig.suptitle(wrap_text(suptitle, grid_w, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE) \
            if suptitle else None
        mosaic.arrange(tile, tile_h, bar, top, bar_shrink=0.9 if rows > 1 else 1.0)
        _mosaic_tiles(mosaic, pixels, maps, colormap, alpha, vmin, vmax)
        return fig
    label_room = 0.45  # tick labels and axis labels of each tile
    fig_w = cols * (tile + 0.1 + label_room) + 1.0
    fig_h = rows * (tile_h + title_h + 0.1 + label_room) + (0.45 if suptitle else 0.1)
    fig = new_figure(fig_w, fig_h)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.set_axis_off()
            continue
        _draw_tile(ax, pixels[i], maps[i], colormap, alpha, vmin, vmax, axis_labels)
        if wrapped:
            ax.set_title(wrapped[i], fontsize=TITLE_FONTSIZE)
    _colorbar(fig, axes, colormap, rows, vmin, vmax, str(colorbar_label), extend)
    if suptitle:
        fig.suptitle(wrap_text(suptitle, fig_w, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig
