"""Heatmap tiles and their colour scale: colour maps, heatmap resizing, value ranges, tiles and colour bars.

Shared by the overlay grid, the frame strips and the signed (SHAP) figures.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._utils import LABEL_FONTSIZE, TICK_FONTSIZE

COLORBAR_LABEL = "attribution (normalised)"


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
        raise ValueError(
            expected(
                "heatmaps",
                f"a tensor of shape {layout} with leading dimensions {lead}",
                tuple(heatmaps.shape),
            )
        )
    if tuple(maps.shape[-2:]) != size:
        flat = maps.reshape(-1, 1, *maps.shape[-2:])
        finite = torch.isfinite(flat)
        resized = F.interpolate(
            torch.where(finite, flat, torch.zeros_like(flat)), size=size, mode="bilinear", align_corners=False
        )
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
    axis_labels: tuple[str, str] | None = None,
) -> None:
    """One tile: the image, the heatmap over it. With ``axis_labels`` (x, y) the rows run upwards (row 0 at the
    bottom: frequency up on a spectrogram) and the axes are labelled; else a photo without axes."""
    origin = "lower" if axis_labels else "upper"
    ax.imshow(image, interpolation="nearest", origin=origin, aspect="auto" if axis_labels else "equal")
    ax.imshow(
        np.ma.masked_invalid(heatmap),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha,
        interpolation="bilinear",
        origin=origin,
        aspect="auto" if axis_labels else "equal",
    )
    if axis_labels:
        ax.set_xlabel(axis_labels[0], fontsize=TICK_FONTSIZE)
        ax.set_ylabel(axis_labels[1], fontsize=TICK_FONTSIZE)
        ax.tick_params(labelsize=TICK_FONTSIZE)
        return
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _mosaic_tiles(
    mosaic: Any,
    images: np.ndarray,
    heatmaps: np.ndarray,
    cmap: Colormap,
    alpha: float,
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> None:
    """Photo tiles of a :class:`~lightning_xai.render._mosaic.TileMosaic` (arranged), row by row, as
    :func:`_draw_tile` draws them without ``axis_labels``: the images ``(B, H, W, 3)`` in ``[0, 1]`` (nearest)
    composed into one image; the heatmaps ``(B, H, W)`` (bilinear, NaN transparent, one colour map and scale)
    over them, composed into a second one where each tile shows its map at least 3 times enlarged (matplotlib
    then interpolates the values, as the composition does), else an ``imshow`` each."""
    cols = mosaic.cols
    rgba = np.full((*images.shape[:3], 4), 255, np.uint8)
    rgba[..., :3] = (images * 255).astype(np.uint8)  # as imshow turns float colours into bytes
    mosaic.composite({divmod(i, cols): tile for i, tile in enumerate(rgba)})
    x0, x1, y1, y0 = mosaic.extent(0, 0)
    enlarged = min((x1 - x0) / heatmaps.shape[2], (y1 - y0) / heatmaps.shape[1]) * mosaic.fig.dpi
    style: dict[str, Any] = {"cmap": cmap, "norm": Normalize(vmin, vmax), "alpha": alpha, "interpolation": "bilinear"}
    if enlarged >= 3.0:
        mosaic.composite({divmod(i, cols): np.ma.masked_invalid(tile) for i, tile in enumerate(heatmaps)}, **style)
        return
    for i, heatmap in enumerate(heatmaps):
        mosaic.image(*divmod(i, cols), np.ma.masked_invalid(heatmap), **style)


def _colorbar(
    fig: Figure,
    axes: Any,
    cmap: Colormap,
    rows: int,
    vmin: float = 0.0,
    vmax: float = 1.0,
    label: str = COLORBAR_LABEL,
    extend: str = "neither",
    cax: Any = None,
) -> Colorbar:
    """The grid's colour bar: beside ``axes`` (constrained layout), or in ``cax`` (a manual layout; ``axes`` is
    then unused)."""
    mappable = ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap)
    if cax is not None:
        bar = fig.colorbar(mappable, cax=cax, extend=extend)
    else:
        bar = fig.colorbar(
            mappable,
            ax=axes,
            shrink=0.9 if rows > 1 else 1.0,
            aspect=max(12.0, 10.0 * rows),
            pad=0.02,
            extend=extend,
        )
    bar.set_label(label, fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)
    return bar


def _tile_inches(count: int) -> float:
    """Side of one tile: large for a handful of images, smaller (never tiny) for many."""
    if count <= 4:
        return 2.6
    if count <= 16:
        return 2.2
    return 1.8
