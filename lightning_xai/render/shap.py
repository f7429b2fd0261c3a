"""Signed attributions (SHAP values) on images, clips and spectrograms, and per-modality shares of |SHAP|.

A SHAP value is signed: positive pushes the output toward the explained class, negative away from it. Every
figure here therefore uses a diverging colour map centred at 0 with a symmetric range, shared by all panels of
a figure: ``±`` the 99th percentile of ``|values|``, so that one outlier does not wash everything else out
(values beyond it are clipped and the colour bar gets arrows). Over images the colour fades to transparent
towards 0, so the greyscale picture underneath shows where the model does not care. NaN/inf values are left
transparent. Token plots live in :mod:`lightning_xai.render.shap_text`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, ListedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from lightning_xai._checks import check_choice, check_positive_int, expected
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
from lightning_xai.render.frames import frame_strip
from lightning_xai.render.overlay import _colormap, _extend, denormalize, overlay_grid

__all__ = ["modality_shares", "signed_frame_strip", "signed_heatmap_grid", "spectrogram_plot"]

SHAP_LABEL = "SHAP value (→ class)"
_PERCENTILE = 99.0


def _symmetric_limit(*arrays: np.ndarray | Tensor, percentile: float = _PERCENTILE) -> float:
    """``percentile`` of ``|values|`` over every finite entry of ``arrays`` (1.0 when there is nothing)."""
    parts = [np.abs(np.asarray(a.detach().cpu().double() if isinstance(a, Tensor) else a, dtype=np.float64))
             for a in arrays]
    flat = np.concatenate([p[np.isfinite(p)].ravel() for p in parts]) if parts else np.empty(0)
    if flat.size == 0:
        return 1.0
    limit = float(np.percentile(flat, percentile))
    if limit <= 0.0:
        limit = float(flat.max())
    return limit if limit > 0.0 else 1.0


def _signed_colormap(cmap: str | Colormap, fade: bool) -> Colormap:
    """The diverging map (NaN transparent); with ``fade`` its opacity falls to 0 at the centre (value 0)."""
    base = _colormap(cmap)
    if not fade:
        return base
    colours = base(np.linspace(0.0, 1.0, 256))
    distance = np.abs(np.linspace(-1.0, 1.0, 256))
    colours[:, 3] = np.clip(distance / 0.5, 0.0, 1.0) ** 1.2
    return ListedColormap(colours, name=f"{base.name}_faded").with_extremes(
        bad=(0.0, 0.0, 0.0, 0.0), under=colours[0], over=colours[-1]
    )


def _signed_colours(cmap: str | Colormap) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(positive, negative) bar colours taken from the ends of the diverging map."""
    base = _colormap(cmap)
    return to_rgb(base(0.85)), to_rgb(base(0.15))


def _values(values: Any, lead: tuple[int, ...], layout: str, name: str = "values") -> Tensor:
    """``values`` as a float CPU tensor ``(*lead, H, W)`` (a singleton channel after ``lead`` is dropped)."""
    if not isinstance(values, Tensor):
        raise TypeError(expected(name, "a torch.Tensor", type(values).__name__))
    out = values.detach().cpu().float()
    if out.ndim == len(lead) + 3 and out.shape[len(lead)] == 1:
        out = out.squeeze(len(lead))
    if out.ndim != len(lead) + 2 or tuple(out.shape[: len(lead)]) != lead or out.numel() == 0:
        raise ValueError(expected(name, f"a tensor of shape {layout} with leading dimensions {lead}",
                                  tuple(values.shape)))
    return out


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
        >>> len(fig.axes)  # two tiles and the colour bar
        3
        >>> low, high = fig.axes[0].get_images()[1].get_clim()
        >>> low == -high
        True
    """
    pixels = denormalize(images, mean, std)
    maps = _values(values, (pixels.shape[0],), "(B, H, W) or (B, 1, H, W)")
    limit = _symmetric_limit(maps)
    return overlay_grid(_grey(pixels), maps, titles=titles, suptitle=suptitle, ncols=ncols, alpha=alpha,
                        cmap=_signed_colormap(cmap, fade=True), vmin=-limit, vmax=limit,
                        colorbar_label=colorbar_label)


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
    return frame_strip(grey.reshape(count, steps, 1, height, width), maps, titles=titles, suptitle=suptitle,
                       alpha=alpha, cmap=_signed_colormap(cmap, fade=True), vmin=-limit, vmax=limit,
                       colorbar_label=colorbar_label)


def _spectrogram_background(spectrogram: np.ndarray) -> np.ndarray:
    """A display version in [0, 1]: log scale for power spanning > 3 decades, percentiles clipped."""
    x = np.where(np.isfinite(spectrogram), spectrogram, np.nan)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros_like(x)
    if finite.min() >= 0.0 and finite.max() > 1000.0 * max(float(np.median(finite)), 1e-12):
        x = np.log10(x + max(float(finite.max()) * 1e-8, 1e-12))
        finite = x[np.isfinite(x)]
    low, high = np.percentile(finite, [1.0, 99.5])
    return np.nan_to_num(np.clip((x - low) / max(high - low, 1e-12), 0.0, 1.0))


def spectrogram_plot(
    spectrograms: Tensor,
    values: Tensor,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    sample_rate: float | None = None,
    hop_length: int | None = None,
    ncols: int = 2,
    cmap: str | Colormap = "RdBu_r",
    frequency_axis: Literal["hz", "bins"] = "hz",
    colorbar_label: str = SHAP_LABEL,
) -> Figure:
    """Signed attributions on time x frequency, with the time and frequency marginals beside them.

    Per sample: the values as a heatmap over the (faint, greyscale) spectrogram, frequency up, time right;
    above it the time marginal (sum over frequency), to its right the frequency marginal (sum over time),
    both as signed bars. One symmetric colour range and bar for all samples.

    Args:
        spectrograms: ``(B, F, T)`` or ``(B, 1, F, T)``: magnitudes, power or dB (power spanning more than
            three decades is shown on a log scale).
        values: Signed values shaped like ``spectrograms``; NaN/inf are transparent and left out of the sums.
        titles: One title per sample.
        suptitle: Figure title.
        sample_rate: Audio sample rate in Hz; with it the frequency axis is in Hz (see ``frequency_axis``).
        hop_length: STFT hop in samples; with ``sample_rate`` the time axis is in seconds, else in frames.
        ncols: Maximum samples per row.
        cmap: Diverging colour map; its centre is value 0, and it fades to transparent there.
        frequency_axis: ``"hz"`` takes the bins as linear from 0 to ``sample_rate / 2`` (an STFT); use
            ``"bins"`` for mel or other non-linear scales.
        colorbar_label: Label of the colour bar.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas: three axes per sample and the colour bar.

    Raises:
        TypeError: If ``spectrograms``/``values`` are not tensors or ``titles`` is not a sequence of strings.
        ValueError: On mismatched shapes, a wrong number of titles or an invalid option.

    Example:
        >>> spectrograms, values = torch.rand(1, 16, 20), torch.randn(1, 16, 20)
        >>> fig = spectrogram_plot(spectrograms, values, sample_rate=8000, hop_length=64)
        >>> len(fig.axes)  # heatmap, two marginals, colour bar
        4
        >>> fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()
        ('time (s)', 'frequency (Hz)')
    """
    if not isinstance(spectrograms, Tensor):
        raise TypeError(expected("spectrograms", "a torch.Tensor", type(spectrograms).__name__))
    specs = spectrograms.detach().cpu().float()
    if specs.ndim == 4 and specs.shape[1] == 1:
        specs = specs.squeeze(1)
    if specs.ndim != 3 or specs.numel() == 0:
        raise ValueError(expected("spectrograms", "a non-empty tensor of shape (B, F, T) or (B, 1, F, T)",
                                  tuple(spectrograms.shape)))
    count, bins, frames = specs.shape
    maps = _values(values, (count,), "(B, F, T) or (B, 1, F, T)")
    if tuple(maps.shape[1:]) != (bins, frames):
        raise ValueError(expected("values", f"shaped like `spectrograms` ({count}, {bins}, {frames})",
                                  tuple(values.shape)))
    labels = check_titles("titles", titles, count)
    check_positive_int("ncols", ncols)
    check_choice("frequency_axis", frequency_axis, ("hz", "bins"))
    for name, number in (("sample_rate", sample_rate), ("hop_length", hop_length)):
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))
                                   or not math.isfinite(number) or number <= 0):
            raise ValueError(expected(name, "a positive number or None", number))
    in_seconds = sample_rate is not None and hop_length is not None
    in_hz = sample_rate is not None and frequency_axis == "hz"
    dt = hop_length / sample_rate if in_seconds else 1.0  # type: ignore[operator]
    df = sample_rate / 2.0 / max(bins - 1, 1) if in_hz else 1.0  # type: ignore[operator]
    extent = (-dt / 2, (frames - 0.5) * dt, -df / 2, (bins - 0.5) * df)
    times, freqs = np.arange(frames) * dt, np.arange(bins) * df

    data = maps.numpy()
    limit = _symmetric_limit(data)
    faded = _signed_colormap(cmap, fade=True)
    positive, negative = _signed_colours(cmap)
    cols = min(ncols, count)
    rows = math.ceil(count / cols)
    fig_w = cols * 5.4 + 1.0
    fig_h = rows * 3.9 + (0.45 if suptitle else 0.1)
    fig = new_figure(fig_w, fig_h)
    grid = fig.add_gridspec(2 * rows, 2 * cols, height_ratios=[1.0, 3.2] * rows,
                            width_ratios=[4.2, 1.0] * cols)
    wrapped = wrap_titles(labels, 4.6) if labels else None
    heatmaps = []
    for i in range(count):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * r + 1, 2 * c])
        top = fig.add_subplot(grid[2 * r, 2 * c], sharex=ax)
        side = fig.add_subplot(grid[2 * r + 1, 2 * c + 1], sharey=ax)
        heatmaps.append(ax)
        ax.imshow(_spectrogram_background(specs[i].numpy()), cmap="Greys", vmin=0.0, vmax=1.0, alpha=0.5,
                  origin="lower", aspect="auto", extent=extent, interpolation="nearest")
        ax.imshow(np.ma.masked_invalid(data[i]), cmap=faded, vmin=-limit, vmax=limit, origin="lower",
                  aspect="auto", extent=extent, interpolation="nearest")
        ax.set_xlabel("time (s)" if in_seconds else "time frame", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel("frequency (Hz)" if in_hz else "frequency bin", fontsize=LABEL_FONTSIZE)
        finite = np.where(np.isfinite(data[i]), data[i], 0.0)
        _marginal(top, times, finite.sum(axis=0), dt, positive, negative, vertical=True)
        _marginal(side, freqs, finite.sum(axis=1), df, positive, negative, vertical=False)
        top.set_ylabel("Σ freq.", fontsize=LABEL_FONTSIZE)
        side.set_xlabel("Σ time", fontsize=LABEL_FONTSIZE)
        top.tick_params(labelbottom=False, labelsize=TICK_FONTSIZE)
        side.tick_params(labelleft=False, labelsize=TICK_FONTSIZE)
        ax.tick_params(labelsize=TICK_FONTSIZE)
        if wrapped:
            top.set_title(wrapped[i], fontsize=TITLE_FONTSIZE)
    mappable = ScalarMappable(norm=Normalize(-limit, limit), cmap=faded)
    bar = fig.colorbar(mappable, ax=fig.axes, shrink=0.9 if rows > 1 else 0.95, aspect=max(20.0, 12.0 * rows),
                       pad=0.02, extend=_extend(data, -limit, limit))
    bar.set_label(colorbar_label, fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)
    if suptitle:
        fig.suptitle(wrap_text(suptitle, fig_w, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig


def _marginal(ax: Any, where: np.ndarray, sums: np.ndarray, step: float, positive: Any, negative: Any,
              vertical: bool) -> None:
    """Signed bars of a marginal, centred on 0 with a symmetric range."""
    colours = [positive if s >= 0 else negative for s in sums]
    reach = float(np.abs(sums).max()) * 1.1 or 1.0
    if vertical:
        ax.bar(where, sums, width=step, color=colours)
        ax.axhline(0.0, color="0.3", linewidth=0.6)
        ax.set_ylim(-reach, reach)
        ax.yaxis.set_major_locator(MaxNLocator(3, symmetric=True))
    else:
        ax.barh(where, sums, height=step, color=colours)
        ax.axvline(0.0, color="0.3", linewidth=0.6)
        ax.set_xlim(-reach, reach)
        ax.xaxis.set_major_locator(MaxNLocator(3, symmetric=True))
    ax.ticklabel_format(axis="y" if vertical else "x", style="sci", scilimits=(-2, 3))


def modality_shares(
    shares: Tensor | Sequence[Sequence[float]],
    names: Sequence[str],
    title: str | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """How the total ``|SHAP|`` of each sample splits over its inputs: one stacked 100 % bar per sample.

    Args:
        shares: Non-negative ``(B, M)`` (or ``(M,)`` for one sample): total ``|SHAP|`` (or shares) per input,
            e.g. ``pixel_values`` and ``input_ids``; each row is scaled to 100 %. NaN/inf count as 0.
        names: The ``M`` input names, for the legend.
        title: Figure title.
        labels: One label per sample (row); ``"sample i"`` by default.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas and one axes; shares of 6 % or more are
        written on their segment.

    Raises:
        TypeError: If ``names``/``labels`` are not sequences of strings.
        ValueError: If ``shares`` is not 1- or 2-D, has negative entries or does not match ``names``.

    Example:
        >>> fig = modality_shares(torch.tensor([[3.0, 1.0], [1.0, 1.0]]), ["pixel_values", "input_ids"])
        >>> [t.get_text() for t in fig.axes[0].texts]  # pixel_values of both samples, then input_ids
        ['75%', '50%', '25%', '50%']
    """
    raw = shares.detach().cpu().double() if isinstance(shares, Tensor) else torch.as_tensor(shares).double()
    matrix = raw.unsqueeze(0) if raw.ndim == 1 else raw
    if matrix.ndim != 2 or matrix.numel() == 0:
        raise ValueError(expected("shares", "a non-empty tensor of shape (B, M) or (M,)", tuple(raw.shape)))
    matrix = torch.where(torch.isfinite(matrix), matrix, torch.zeros_like(matrix))
    if (matrix < 0).any():
        raise ValueError(expected("shares", "non-negative (totals of |SHAP| per input)", matrix.min().item()))
    count, modalities = matrix.shape
    if names is None:
        raise TypeError(expected("names", f"a sequence of {modalities} strings", names))
    names = check_titles("names", names, modalities) or []
    rows = check_titles("labels", labels, count) or [f"sample {i}" for i in range(count)]
    totals = matrix.sum(dim=1, keepdim=True)
    percent = (100.0 * matrix / totals.clamp_min(1e-300)).numpy()

    fig = new_figure(7.0, 0.42 * count + 1.5 + (0.35 if title else 0.0))
    ax = fig.add_subplot()
    palette = [to_rgb(f"C{m % 10}") for m in range(modalities)]
    left = np.zeros(count)
    ypos = np.arange(count)
    for m in range(modalities):
        ax.barh(ypos, percent[:, m], left=left, height=0.7, color=palette[m], label=names[m],
                edgecolor="white", linewidth=0.8)
        for y in ypos:
            if percent[y, m] >= 6.0:
                dark = 0.299 * palette[m][0] + 0.587 * palette[m][1] + 0.114 * palette[m][2] < 0.55
                ax.text(left[y] + percent[y, m] / 2, y, f"{percent[y, m]:.0f}%", ha="center", va="center",
                        fontsize=TICK_FONTSIZE, color="white" if dark else "black")
        left += percent[:, m]
    for y in ypos[totals[:, 0].numpy() <= 0]:
        ax.text(50.0, y, "no attribution", ha="center", va="center", fontsize=TICK_FONTSIZE, color="0.4")
    ax.set_yticks(ypos, [wrap_text(r, 1.8, TICK_FONTSIZE) for r in rows], fontsize=TICK_FONTSIZE)
    ax.set_ylim(count - 0.5, -0.5)
    ax.set_xlim(0.0, 100.0)
    ax.set_xlabel("share of total |SHAP| (%)", fontsize=LABEL_FONTSIZE)
    ax.tick_params(axis="x", labelsize=TICK_FONTSIZE)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncols=min(modalities, 4), fontsize=LABEL_FONTSIZE,
              frameon=False, borderaxespad=0.0)
    if title:
        fig.suptitle(wrap_text(title, 7.0, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig
