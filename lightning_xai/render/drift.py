"""Pictures of attribution drift: a timeline of drift metrics and a probe × snapshot grid of maps or tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._grid import arrange_panels, colorbar_axes
from lightning_xai.render._mosaic import TileMosaic
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    TITLE_FONTSIZE,
    new_figure,
    wrap_text,
)

__all__ = ["drift_timeline", "snapshot_grid", "token_snapshot_grid"]

#: Metrics whose value for identical attributions is 0 (shifts, in pixels); every other one is 1 when identical.
ZERO_WHEN_IDENTICAL = ("com_shift", "focus_radius_change")
_STYLES = {"previous": dict(linestyle="-", marker="o", markersize=3.5),
           "first": dict(linestyle="--", marker="o", markersize=7, markerfacecolor="none"),
           "reference": dict(linestyle=":", marker="s", markersize=4)}
_ORDER = ("spearman", "ndcg", "topk_iou", "cosine", "top_token_overlap", "com_shift", "focus_radius_change",
          "previous", "first", "reference")


def _ordered(names: Sequence[str]) -> list[str]:
    """Known metrics and comparisons in their usual order (metric names may carry an ``<input>/`` prefix)."""
    def rank(name: str) -> tuple[str, int]:
        prefix, _, last = name.rpartition("/")
        return prefix, _ORDER.index(last) if last in _ORDER else len(_ORDER)
    return sorted(names, key=rank)


def drift_timeline(
    series: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    title: str | None = None,
    alert_below: float | None = None,
    xlabel: str = "epoch",
) -> Figure:
    """One panel per drift metric, one line per comparison, over epochs (or any integer axis).

    Args:
        series: ``{metric: {label: [(epoch, value), ...]}}``; labels are ``"previous"``, ``"first"``,
            ``"reference"``, or ``"<run> vs <against>"`` (one colour per run, one line style per comparison). Similarity metrics (Spearman, nDCG, IoU, cosine, overlap) read 1.0 for
            identical attributions; shifts (``com_shift``, ``focus_radius_change``, pixels) read 0.
        title: Figure title.
        alert_below: Draw this threshold on the ``spearman`` panel (the callback's ``alert_below``).
        xlabel: Label of the horizontal axis.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas.

    Example:
        >>> fig = drift_timeline({"spearman": {"previous": [(1, 0.8), (2, 0.9)], "first": [(1, 0.8), (2, 0.7)]},
        ...                       "com_shift": {"previous": [(1, 2.0), (2, 0.5)]}}, alert_below=0.75)
        >>> [ax.get_title() for ax in fig.axes]
        ['spearman (1 = identical)', 'com_shift (0 = identical, px)']
    """
    if not isinstance(series, Mapping) or not series:
        raise ValueError(expected("series", "a non-empty mapping {metric: {label: [(epoch, value), ...]}}", series))
    metrics = _ordered(list(series))
    ncols = min(3, len(metrics))
    fig = new_figure(1.0, 1.0, layout=None)  # placed by render/_grid.py: measured once, no layout engine
    axes = [fig.add_axes((0.0, 0.0, 1.0, 1.0)) for _ in metrics]
    colours: dict[str, str] = {}
    for ax, metric in zip(axes, metrics):
        zero = metric.rpartition("/")[2] in ZERO_WHEN_IDENTICAL
        for label in _ordered(list(series[metric])):
            points = series[metric][label]
            if not points:
                continue
            xs, ys = zip(*sorted(points))
            run, _, against = str(label).rpartition(" vs ")  # "<run> vs <against>": one colour per run
            style = dict(_STYLES.get(against, dict(marker="o", markersize=3.5)))
            if run:
                style["color"] = colours.setdefault(run, f"C{len(colours) % 10}")
            ax.plot(xs, ys, label=str(label), **style)
        ax.axhline(0.0 if zero else 1.0, color="0.6", linewidth=0.8)
        if metric.endswith("spearman") and alert_below is not None:
            ax.axhline(alert_below, color="tab:red", linewidth=1.0, linestyle="--", label=f"alert < {alert_below:g}")
        ax.set_title(f"{metric} ({'0 = identical, px' if zero else '1 = identical'})", fontsize=TITLE_FONTSIZE)
        ax.set_xlabel(xlabel, fontsize=LABEL_FONTSIZE)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: never 0.96, 0.98, ...
        epochs = {x for points in series[metric].values() for x, _ in points}
        if len(epochs) == 1:  # one epoch so far: a tick at it, not a zoom into its neighbourhood
            (only,) = epochs
            ax.set_xlim(only - 1, only + 1)
            ax.set_xticks([only])
        ax.tick_params(labelsize=TICK_FONTSIZE)
        ax.grid(alpha=0.3)
    entries: dict[str, Any] = {}  # one legend for every panel, below them: the same lines in each
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    legend = fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=min(len(entries), 4),
                        fontsize=TICK_FONTSIZE, frameon=False) if entries else None
    top = fig.suptitle(title, fontsize=SUPTITLE_FONTSIZE) if title else None
    arrange_panels(fig, axes, ncols, panel_w=3.5, panel_h=2.1, suptitle=top, legend=legend)
    return fig


def _as_numpy(name: str, values: Tensor | np.ndarray, ndim: int, layout: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        array = values.detach().float().cpu().numpy()
    else:
        array = np.asarray(values, np.float32)
    if array.ndim != ndim:
        raise ValueError(expected(name, f"an array shaped {layout}", tuple(array.shape)))
    return array


def _relative(array: np.ndarray) -> np.ndarray:
    """|values| divided by each map's own max |value| (NaN -> 0), so maps of any scale share one colour bar."""
    mag = np.nan_to_num(np.abs(array), nan=0.0, posinf=0.0, neginf=0.0)
    peak = mag.reshape(*mag.shape[:2], -1).max(-1)
    return mag / np.where(peak > 0, peak, 1.0)[..., None, None]


def _rgba(image: Tensor) -> np.ndarray:
    """A probe image ``(C, H, W)`` (or ``(H, W)``) in ``[0, 1]`` as ``(H, W, 4)`` ``uint8`` RGBA, as ``imshow``
    shows it: one channel grey and stretched to its own range, three or four as colours."""
    picture = image.detach().float().cpu().clamp(0, 1)
    picture = picture.permute(1, 2, 0).numpy() if picture.dim() == 3 else picture.numpy()
    picture = picture.squeeze()
    if picture.ndim == 2:
        return ScalarMappable(Normalize(), "gray").to_rgba(picture, bytes=True)
    rgba = np.ones((*picture.shape[:2], 4), np.float32)
    rgba[..., : picture.shape[-1]] = picture[..., :4]
    return (rgba * 255).astype(np.uint8)


def snapshot_grid(
    maps: Tensor | np.ndarray,
    probe_titles: Sequence[str],
    snapshot_titles: Sequence[str],
    suptitle: str | None = None,
    images: Tensor | None = None,
    cmap: str = "inferno",
) -> Figure:
    """Rows are probes, columns snapshots: how each probe's map moved, on one relative colour scale.

    Args:
        maps: ``(P, S, H, W)`` maps (any sign; shown as ``|map| / max |map|`` of each map).
        probe_titles: ``P`` row labels.
        snapshot_titles: ``S`` column titles (e.g. ``"epoch 3"``, ``"ref epoch 3"``).
        suptitle: Figure title.
        images: Optional ``(P, C, H', W')`` probe images in ``[0, 1]``, shown as the first column.
        cmap: Colour map of the maps.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas: every tile (the probe image first in its row
        when given, then the snapshots) is drawn in ONE composed RGBA image of ONE axes (``fig.axes[0]``, axis
        off, data coordinates in inches), each tile framed by a thin line, column titles and row labels texts
        of that axes; ``fig.axes[1]`` is the colour bar.

    Example:
        >>> fig = snapshot_grid(torch.rand(2, 3, 8, 8), ["#0", "#1"], ["e0", "e1", "e2"])
        >>> len(fig.axes), len(fig.axes[0].get_images())  # one axes with the 6 tiles as one image, the colour bar
        (2, 1)
    """
    array = _relative(_as_numpy("maps", maps, 4, "(probes, snapshots, H, W)"))
    n_probes, n_snaps = array.shape[:2]
    if len(probe_titles) != n_probes or len(snapshot_titles) != n_snaps:
        raise ValueError(expected("probe_titles/snapshot_titles", f"{n_probes} and {n_snaps} titles",
                                  (len(probe_titles), len(snapshot_titles))))
    lead = 1 if images is not None else 0
    tile = 1.6
    tile_h = tile * array.shape[2] / array.shape[3]
    fig = new_figure(1.0, 1.0, layout=None)  # tiles of one axes (render/_mosaic.py): measured once, no layout engine
    mosaic = TileMosaic(fig, n_probes, n_snaps + lead)
    if images is not None:
        mosaic.title(0, 0, "input", TITLE_FONTSIZE)
    for s in range(n_snaps):
        mosaic.title(0, s + lead, wrap_text(snapshot_titles[s], tile), TITLE_FONTSIZE)
    for p in range(n_probes):
        mosaic.row_label(p, wrap_text(probe_titles[p], tile), LABEL_FONTSIZE)
    scale = ScalarMappable(Normalize(0.0, 1.0), cmap)  # one colour map and scale: the tiles are one image
    bar = fig.colorbar(scale, cax=colorbar_axes(fig))
    bar.set_label("|map| / max |map|", fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)
    top = fig.suptitle(suptitle, fontsize=SUPTITLE_FONTSIZE) if suptitle else None
    mosaic.arrange(tile, tile_h, bar, top, bar_shrink=0.8)
    colours = scale.to_rgba(array, bytes=True)  # (P, S, H, W, 4), as imshow would colour them
    tiles = {(p, s + lead): colours[p, s] for p in range(n_probes) for s in range(n_snaps)}
    pictures = [_rgba(images[p]) for p in range(n_probes)] if images is not None else []
    enlarged = min((min(tile / p.shape[1], tile_h / p.shape[0]) * fig.dpi for p in pictures), default=0) >= 3
    if enlarged:  # drawn nearest, as imshow draws an image enlarged 3 times or more: composed with the maps
        tiles.update({(p, 0): picture for p, picture in enumerate(pictures)})
    mosaic.composite(tiles, keep_aspect=[(p, 0) for p in range(n_probes)] if enlarged else ())
    for p, picture in enumerate(pictures if not enlarged else []):  # imshow's antialiasing where it shrinks
        mosaic.image(p, 0, picture, keep_aspect=True)
    mosaic.frames()  # a thin frame round each tile: black maps, row labels
    return fig


def token_snapshot_grid(
    values: Tensor | np.ndarray,
    tokens: Sequence[Sequence[str]],
    probe_titles: Sequence[str],
    snapshot_titles: Sequence[str],
    keep: Tensor | None = None,
    suptitle: str | None = None,
    max_tokens: int = 32,
) -> Figure:
    """One panel per probe: snapshots (rows) × tokens (columns), shaded by relative |attribution|.

    Args:
        values: ``(P, S, L)`` token attributions.
        tokens: ``P`` lists of ``L`` token strings.
        probe_titles: ``P`` panel titles.
        snapshot_titles: ``S`` row labels.
        keep: Optional ``(P, L)`` bool mask of the tokens to show (padding and special tokens out).
        suptitle: Figure title.
        max_tokens: Most tokens shown per probe (the first ones kept).

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas and one colour bar.

    Example:
        >>> fig = token_snapshot_grid(torch.rand(1, 2, 3), [["a", "b", "c"]], ["#0"], ["e0", "e1"])
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
        ['a', 'b', 'c']
    """
    array = _as_numpy("values", values, 3, "(probes, snapshots, tokens)")
    n_probes, n_snaps, length = array.shape
    if len(tokens) != n_probes or len(probe_titles) != n_probes or len(snapshot_titles) != n_snaps:
        raise ValueError(expected("tokens/probe_titles/snapshot_titles", f"{n_probes}, {n_probes} and {n_snaps}",
                                  (len(tokens), len(probe_titles), len(snapshot_titles))))
    mask = np.ones((n_probes, length), bool) if keep is None else keep.detach().cpu().bool().numpy()
    widths = [min(int(mask[p].sum()), max_tokens) for p in range(n_probes)]
    fig = new_figure(max(4.0, 0.42 * max(widths) + 2.2), (0.32 * n_snaps + 1.1) * n_probes + 0.5)
    axes = fig.subplots(n_probes, 1, squeeze=False)[:, 0]
    shown = None
    for p, ax in enumerate(axes):
        columns = np.flatnonzero(mask[p])[:max_tokens]
        rel = _relative(array[p : p + 1, :, columns][..., None])[0, ..., 0]
        shown = ax.imshow(rel, cmap="inferno", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(columns)), [str(tokens[p][c]) for c in columns], rotation=60, ha="right",
                      fontsize=TICK_FONTSIZE)
        ax.set_yticks(range(n_snaps), list(snapshot_titles), fontsize=TICK_FONTSIZE)
        ax.set_title(probe_titles[p], fontsize=TITLE_FONTSIZE)
    bar = fig.colorbar(shown, ax=list(axes), shrink=0.8, pad=0.02)
    bar.set_label("|value| / max |value| per snapshot", fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_FONTSIZE)
    return fig
