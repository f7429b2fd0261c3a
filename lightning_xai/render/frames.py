"""Video: frame strips of clips with one heatmap per frame, as matplotlib figures."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.colors import Colormap
from matplotlib.figure import Figure
import torch  # noqa: F401  (the docstring example uses it)
from torch import Tensor

from lightning_xai._checks import check_probability, expected
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TITLE_FONTSIZE,
    check_titles,
    new_figure,
    wrap_text,
    wrap_titles,
)
from lightning_xai.render.overlay import (
    COLORBAR_LABEL,
    _check_range,
    _colorbar,
    _colormap,
    _draw_tile,
    _extend,
    _heatmaps,
    denormalize,
)

__all__ = ['frame_strip']


def frame_strip(
    clips: Tensor,
    heatmaps: Tensor,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    time_dim: int = 1,
    vmin: float = 0.0,
    vmax: float = 1.0,
    colorbar_label: str = COLORBAR_LABEL,
) -> Figure:
    """Video overlays: one row per clip, one column per frame, one shared colour bar.

    Rows are labelled with the clips' titles, columns with ``"frame t"`` (``t`` counted from 0, as it indexes
    the clip).

    Args:
        clips: Clips ``(B, T, C, H, W)`` (or ``(B, C, T, H, W)`` with ``time_dim=2``), normalised or not.
        heatmaps: Maps ``(B, T, H', W')`` with values in [0, 1]; resized (bilinear) to the frames' size if
            needed. NaN/inf pixels are drawn transparent.
        titles: One label per clip (row), e.g. ``"true: circle | pred: circle (0.97)"``.
        suptitle: Figure title.
        alpha: Opacity of the heatmap over the frame.
        cmap: Matplotlib colour map (name or object) of the heatmap.
        mean: Per-channel mean the clips were normalised with (inferred when both are None).
        std: Per-channel standard deviation the clips were normalised with.
        time_dim: Dimension of ``clips`` that holds time: 1 for ``(B, T, C, H, W)``, 2 for
            ``(B, C, T, H, W)``.
        vmin: Heatmap value at the bottom of the colour map (e.g. ``-limit`` for signed maps).
        vmax: Heatmap value at the top of the colour map; values outside ``[vmin, vmax]`` are clipped and the
            colour bar gets an arrow on that end.
        colorbar_label: Label of the colour bar.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot involved).

    Raises:
        TypeError: If ``clips``/``heatmaps`` are not tensors, ``titles`` is not a sequence of strings or
            ``vmin``/``vmax`` is not a finite number.
        ValueError: On mismatched shapes, a wrong number of titles or an invalid option.

    Example:
        >>> fig = frame_strip(torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 8, 8), titles=["a", "b"])
        >>> len(fig.axes)  # 2 rows x 3 frames and the colour bar
        7
    """
    if not isinstance(clips, Tensor):
        raise TypeError(expected("clips", "a torch.Tensor", type(clips).__name__))
    if time_dim not in (1, 2) or isinstance(time_dim, bool):
        raise ValueError(expected("time_dim", "1 (B, T, C, H, W) or 2 (B, C, T, H, W)", time_dim))
    if clips.ndim != 5 or clips.numel() == 0:
        layout = "(B, T, C, H, W)" if time_dim == 1 else "(B, C, T, H, W)"
        raise ValueError(expected("clips", f"a non-empty tensor of shape {layout}", tuple(clips.shape)))
    alpha = check_probability("alpha", alpha)
    colormap = _colormap(cmap)
    vmin, vmax = _check_range(vmin, vmax)
    frames_first = clips if time_dim == 1 else clips.transpose(1, 2)
    count, steps, channels, height, width = frames_first.shape
    maps = _heatmaps(heatmaps, (count, steps), (height, width), "(B, T, H, W)")
    labels = check_titles("titles", titles, count)
    pixels = denormalize(frames_first.reshape(count * steps, channels, height, width), mean, std)
    pixels = pixels.reshape(count, steps, 3, height, width).permute(0, 1, 3, 4, 2).numpy()

    tile = 2.2 if steps <= 4 else 1.8 if steps <= 8 else 1.4
    tile_h = tile * height / width
    row_labels = wrap_titles(labels, tile_h, LABEL_FONTSIZE) if labels else None
    label_lines = max((t.count("\n") + 1 for t in row_labels), default=0) if row_labels else 0
    label_w = label_lines * LABEL_FONTSIZE * 1.35 / 72.0
    title_h = TITLE_FONTSIZE * 1.35 / 72.0
    fig_w = steps * (tile + 0.08) + label_w + 1.0
    fig_h = count * (tile_h + 0.08) + title_h + (0.45 if suptitle else 0.1)
    fig = new_figure(fig_w, fig_h)
    axes = fig.subplots(count, steps, squeeze=False)
    for b in range(count):
        for t in range(steps):
            ax = axes[b, t]
            _draw_tile(ax, pixels[b, t], maps[b, t], colormap, alpha, vmin, vmax)
            if b == 0:
                ax.set_title(f"frame {t}", fontsize=TITLE_FONTSIZE)
        if row_labels:
            axes[b, 0].set_ylabel(row_labels[b], fontsize=LABEL_FONTSIZE)
    _colorbar(fig, axes, colormap, count, vmin, vmax, str(colorbar_label), _extend(maps, vmin, vmax))
    if suptitle:
        fig.suptitle(wrap_text(suptitle, fig_w, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig
