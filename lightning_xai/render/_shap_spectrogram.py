"""Signed attributions (SHAP values) on spectrograms, with their time and frequency marginals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch  # noqa: F401  (the docstring examples use it)
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from lightning_xai._checks import check_choice, check_positive_int, expected
from lightning_xai.render._overlay_tiles import _extend
from lightning_xai.render._signed_scale import (
    SHAP_LABEL,
    _signed_colormap,
    _signed_colours,
    _symmetric_limit,
    _values,
)
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

__all__ = ["spectrogram_plot"]


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
        raise ValueError(
            expected(
                "spectrograms",
                "a non-empty tensor of shape (B, F, T) or (B, 1, F, T)",
                tuple(spectrograms.shape),
            )
        )
    count, bins, frames = specs.shape
    maps = _values(values, (count,), "(B, F, T) or (B, 1, F, T)")
    if tuple(maps.shape[1:]) != (bins, frames):
        raise ValueError(
            expected("values", f"shaped like `spectrograms` ({count}, {bins}, {frames})", tuple(values.shape))
        )
    labels = check_titles("titles", titles, count)
    check_positive_int("ncols", ncols)
    check_choice("frequency_axis", frequency_axis, ("hz", "bins"))
    for name, number in (("sample_rate", sample_rate), ("hop_length", hop_length)):
        if number is not None and (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
            or number <= 0
        ):
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
    grid = fig.add_gridspec(
        2 * rows, 2 * cols, height_ratios=[1.0, 3.2] * rows, width_ratios=[4.2, 1.0] * cols
    )
    wrapped = wrap_titles(labels, 4.6) if labels else None
    heatmaps = []
    for i in range(count):
        r, c = divmod(i, cols)
        ax = fig.add_subplot(grid[2 * r + 1, 2 * c])
        top = fig.add_subplot(grid[2 * r, 2 * c], sharex=ax)
        side = fig.add_subplot(grid[2 * r + 1, 2 * c + 1], sharey=ax)
        heatmaps.append(ax)
        ax.imshow(
            _spectrogram_background(specs[i].numpy()),
            cmap="Greys",
            vmin=0.0,
            vmax=1.0,
            alpha=0.5,
            origin="lower",
            aspect="auto",
            extent=extent,
            interpolation="nearest",
        )
        ax.imshow(
            np.ma.masked_invalid(data[i]),
            cmap=faded,
            vmin=-limit,
            vmax=limit,
            origin="lower",
            aspect="auto",
            extent=extent,
            interpolation="nearest",
        )
        ax.set_xlabel("time (s)" if in_seconds else "time frame", fontsize=LABEL_FONTSIZE)
        ax.set_ylabel("frequency (Hz)" if in_hz else "frequency bin", fontsize=LABEL_FONTSIZE)
        finite = np.where(np.isfinite(data[i]), data[i], 0.0)
        top_unit = _marginal(top, times, finite.sum(axis=0), dt, positive, negative, vertical=True)
        side_unit = _marginal(side, freqs, finite.sum(axis=1), df, positive, negative, vertical=False)
        top.set_ylabel("Σ freq." + top_unit, fontsize=LABEL_FONTSIZE)
        side.set_xlabel("Σ time" + side_unit, fontsize=LABEL_FONTSIZE)
        top.tick_params(labelbottom=False, labelsize=TICK_FONTSIZE)
        side.tick_params(labelleft=False, labelsize=TICK_FONTSIZE)
        ax.tick_params(labelsize=TICK_FONTSIZE)
        if wrapped:
            top.set_title(wrapped[i], fontsize=TITLE_FONTSIZE)
    mappable = ScalarMappable(norm=Normalize(-limit, limit), cmap=faded)
    bar = fig.colorbar(
        mappable,
        ax=fig.axes,
        shrink=0.9 if rows > 1 else 0.95,
        aspect=max(20.0, 12.0 * rows),
        pad=0.02,
        extend=_extend(data, -limit, limit),
    )
    bar.set_label(colorbar_label, fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)
    if suptitle:
        fig.suptitle(wrap_text(suptitle, fig_w, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig


def _marginal(
    ax: Any, where: np.ndarray, sums: np.ndarray, step: float, positive: Any, negative: Any, vertical: bool
) -> str:
    """Signed bars of a marginal, centred on 0 with a symmetric range. Small or large sums are drawn in units of a
    power of ten, returned as a label suffix (``" (×1e-3)"``, else ``""``): matplotlib's offset text would sit on
    the neighbouring axis label."""
    peak = float(np.abs(sums).max()) if sums.size else 0.0
    exponent = int(np.floor(np.log10(peak))) if peak > 0 and not 1e-2 <= peak < 1e3 else 0
    sums = sums / 10.0**exponent
    colours = [positive if s >= 0 else negative for s in sums]
    reach = peak / 10.0**exponent * 1.1 or 1.0
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
    return f" (×1e{exponent})" if exponent else ""
