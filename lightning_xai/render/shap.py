"""Signed attributions (SHAP values) on images, clips and spectrograms, and per-modality shares of |SHAP|.

A SHAP value is signed: positive pushes the output toward the explained class, negative away from it. Every
figure here therefore uses a diverging colour map centred at 0 with a symmetric range, shared by all panels of
a figure: ``±`` the 99th percentile of ``|values|``, so that one outlier does not wash everything else out
(values beyond it are clipped and the colour bar gets arrows). Over images the colour fades to transparent
towards 0, so the greyscale picture underneath shows where the model does not care. NaN/inf values are left
transparent. Token plots live in :mod:`lightning_xai.render.shap_text`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.colors import Colormap
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._normalization import denormalize
from lightning_xai.render._shap_shares import modality_shares
from lightning_xai.render._shap_spectrogram import spectrogram_plot
from lightning_xai.render._signed_scale import SHAP_LABEL, _signed_colormap, _symmetric_limit, _values
from lightning_xai.render.frames import frame_strip
from lightning_xai.render.overlay import overlay_grid

# isort: split
# Defined in (or imported by) this module before it was split; re-exported so existing imports keep working.
from lightning_xai.render._overlay_tiles import _colormap, _extend  # noqa: F401
from lightning_xai.render._shap_spectrogram import _marginal, _spectrogram_background  # noqa: F401
from lightning_xai.render._signed_scale import _PERCENTILE, _signed_colours  # noqa: F401
from lightning_xai.render._utils import (  # noqa: F401
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    TITLE_FONTSIZE,
    check_titles,
    new_figure,
    wrap_text,
    wrap_titles,
)

__all__ = ["modality_shares", "signed_frame_strip", "signed_heatmap_grid", "spectrogram_plot"]


def _grey(pixels: Tensor) -> Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] -> luminance ``(N, 1, H, W)``, lifted to [0.25, 1] for the colours."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return 0.25 + 0.75 * (pixels * weights).sum(dim=1, keepdim=True)


def signed_heatmap_grid(
    images: Tensor,
    values: Tensor,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    ncols: int = 4,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cmap: str | Colormap = "RdBu_r",
    alpha: float = 0.9,
    colorbar_label: str = SHAP_LABEL,
) -> Figure:
    """Signed attributions over greyscale images: red toward the class, blue away, one shared colour bar.

    Args:
        images: Images ``(B, C, H, W)``, normalised or not (undone with :func:`denormalize`).
        values: Signed values ``(B, H', W')`` or ``(B, 1, H', W')``, already summed over channels; resized
            (bilinear) to the images' size if needed. NaN/inf pixels are transparent.
        titles: One title per tile; long titles are wrapped.
        suptitle: Figure title, e.g. ``"GradientSHAP · epoch 3"``.
        ncols: Maximum tiles per row.
        mean: Per-channel mean the images were normalised with (inferred when both are None).
        std: Per-channel standard deviation the images were normalised with.
        cmap: Diverging colour map; its centre is value 0, and it fades to transparent there.
        alpha: Opacity of the strongest values over the image.
        colorbar_label: Label of the colour bar.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas; the range is ``±`` the 99th percentile of
        ``|values|`` over all tiles.

    Raises:
        TypeError: If ``images``/``values`` are not tensors or ``titles`` is not a sequence of strings.
        ValueError: On mismatched shapes, a wrong number of titles or an invalid option.

    Example:
        >>> fig = signed_heatmap_grid(torch.rand(2, 3, 8, 8), torch.randn(2, 8, 8), titles=["a", "b"])
        >>> len(fig.axes)  # one axes holding both tiles, and the colour bar
        2
        >>> low, high = fig.axes[0].get_images()[1].get_clim()
        >>> low == -high
        True
    """
    pixels = denormalize(images, mean, std)
    maps = _values(values, (pixels.shape[0],), "(B, H, W) or (B, 1, H, W)")
    limit = _symmetric_limit(maps)
    return overlay_grid(
        _grey(pixels),
        maps,
        titles=titles,
        suptitle=suptitle,
        ncols=ncols,
        alpha=alpha,
        cmap=_signed_colormap(cmap, fade=True),
        vmin=-limit,
        vmax=limit,
        colorbar_label=colorbar_label,
    )


def signed_frame_strip(
    clips: Tensor,
    values: Tensor,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cmap: str | Colormap = "RdBu_r",
    alpha: float = 0.9,
    time_dim: int = 1,
    colorbar_label: str = SHAP_LABEL,
) -> Figure:
    """Signed attributions over video frames: one row per clip, one column per frame, shared range and bar.

    Args:
        clips: Clips ``(B, T, C, H, W)`` (or ``(B, C, T, H, W)`` with ``time_dim=2``), normalised or not.
        values: Signed values ``(B, T, H', W')``, resized to the frames' size if needed; NaN/inf transparent.
        titles: One label per clip (row).
        suptitle: Figure title.
        mean: Per-channel mean the clips were normalised with (inferred when both are None).
        std: Per-channel standard deviation the clips were normalised with.
        cmap: Diverging colour map; its centre is value 0, and it fades to transparent there.
        alpha: Opacity of the strongest values over the frame.
        time_dim: 1 for ``(B, T, C, H, W)``, 2 for ``(B, C, T, H, W)``.
        colorbar_label: Label of the colour bar.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas.

    Raises:
        TypeError: If ``clips``/``values`` are not tensors or ``titles`` is not a sequence of strings.
        ValueError: On mismatched shapes, a wrong number of titles or an invalid option.

    Example:
        >>> fig = signed_frame_strip(torch.rand(2, 3, 3, 8, 8), torch.randn(2, 3, 8, 8))
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
    frames = clips if time_dim == 1 else clips.transpose(1, 2)
    count, steps, channels, height, width = frames.shape
    maps = _values(values, (count, steps), "(B, T, H, W)")
    grey = _grey(denormalize(frames.reshape(count * steps, channels, height, width), mean, std))
    limit = _symmetric_limit(maps)
    return frame_strip(
        grey.reshape(count, steps, 1, height, width),
        maps,
        titles=titles,
        suptitle=suptitle,
        alpha=alpha,
        cmap=_signed_colormap(cmap, fade=True),
        vmin=-limit,
        vmax=limit,
        colorbar_label=colorbar_label,
    )
