"""Calibration pictures: reliability diagrams, per-class calibration error bars, confidently-wrong galleries."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch  # noqa: F401 - the docstring examples use it
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._grid import arrange_column
from lightning_xai.render._utils import LABEL_FONTSIZE, SUPTITLE_FONTSIZE, TICK_FONTSIZE, TITLE_FONTSIZE, new_figure
from lightning_xai.render.overlay import denormalize

__all__ = ["reliability_diagram", "per_class_bars", "image_gallery"]


def _np(values: Tensor | Sequence[float] | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def reliability_diagram(
    counts: Tensor | Sequence[float],
    confidence: Tensor | Sequence[float],
    accuracy: Tensor | Sequence[float],
    ece: float,
    title: str = "Reliability diagram",
    subtitle: str | None = None,
) -> Figure:
    """Accuracy per confidence bin against the diagonal, the gap shaded, sample counts underneath.

    Args:
        counts: predictions per equal-width bin ``(n_bins,)``.
        confidence: mean confidence per bin (NaN for empty bins).
        accuracy: accuracy per bin (NaN for empty bins).
        ece: the expected calibration error, printed in the title.
        title: figure title (ECE is appended).
        subtitle: a second title line (e.g. epoch and step).

    Example:
        >>> fig = reliability_diagram([5, 0, 10], [0.2, float("nan"), 0.9], [0.4, float("nan"), 0.7], ece=0.15)
        >>> len(fig.axes)
        2
    """
    n, conf, acc = _np(counts), _np(confidence), _np(accuracy)
    if not (n.shape == conf.shape == acc.shape) or n.ndim != 1:
        raise ValueError(expected("counts", "1-D and shaped like `confidence` and `accuracy`", n.shape))
    bins = n.size
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / bins
    fig = new_figure(5.2, 5.6, layout=None)  # placed by render/_grid.py: measured once, no layout engine
    ax, hist = fig.add_axes((0.0, 0.0, 1.0, 1.0)), fig.add_axes((0.0, 0.0, 1.0, 1.0))
    filled = n > 0
    ax.bar(centres[filled], acc[filled], width=width, color="#3b6ea8", edgecolor="white", label="accuracy")
    gap_lo, gap_hi = np.minimum(acc, conf)[filled], np.maximum(acc, conf)[filled]
    ax.bar(centres[filled], gap_hi - gap_lo, bottom=gap_lo, width=width, color="#d9534f", alpha=0.35,
           edgecolor="#d9534f", hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "--", color="0.3", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.set_ylabel("accuracy", fontsize=LABEL_FONTSIZE)
    ax.tick_params(labelsize=TICK_FONTSIZE, labelbottom=False)
    ax.legend(loc="upper left", fontsize=TICK_FONTSIZE, frameon=False)
    full = f"{title} · ECE {ece:.4f}" if math.isfinite(ece) else f"{title} · ECE n/a"
    ax.set_title(full if subtitle is None else f"{full}\n{subtitle}", fontsize=TITLE_FONTSIZE + 1)
    hist.bar(centres, n, width=width, color="0.55", edgecolor="white")
    hist.set(xlim=(0, 1))
    hist.set_xlabel("confidence", fontsize=LABEL_FONTSIZE)
    hist.set_ylabel("count", fontsize=LABEL_FONTSIZE)
    hist.tick_params(labelsize=TICK_FONTSIZE)
    arrange_column(fig, [ax, hist], panel_w=4.4, heights=(3.3, 1.1))
    return fig


def per_class_bars(values: Tensor | Sequence[float], class_names: Sequence[str] | None = None,
                   title: str = "ECE per class") -> Figure:
    """A bar per class (e.g. one-vs-rest ECE), classes labelled by name.

    Example:
        >>> len(per_class_bars([0.1, 0.05], ["cat", "dog"]).axes)
        1
    """
    v = _np(values)
    names = list(class_names) if class_names is not None else [str(i) for i in range(v.size)]
    if len(names) != v.size:
        raise ValueError(expected("class_names", f"{v.size} names, one per class", len(names)))
    fig = new_figure(max(4.0, 0.45 * v.size + 1.5), 3.4)
    ax = fig.add_subplot()
    ax.bar(range(v.size), np.nan_to_num(v), color="#3b6ea8")
    ax.set_xticks(range(v.size), names, rotation=45 if v.size > 6 else 0, ha="right" if v.size > 6 else "center",
                  fontsize=TICK_FONTSIZE)
    ax.set_ylabel("ECE (one-vs-rest)", fontsize=LABEL_FONTSIZE)
    ax.tick_params(labelsize=TICK_FONTSIZE)
    ax.set_title(title, fontsize=TITLE_FONTSIZE + 1)
    return fig


def image_gallery(images: Tensor, titles: Sequence[str], suptitle: str | None = None, ncols: int = 4,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Figure:
    """Plain image thumbnails with titles (used when no heatmap is available).

    Example:
        >>> len(image_gallery(torch.rand(3, 3, 8, 8), ["a", "b", "c"]).axes)
        3
    """
    if images.dim() != 4 or len(titles) != images.shape[0]:
        raise ValueError(expected("images", "(B, C, H, W) with one title per image", tuple(images.shape)))
    pics = denormalize(images, mean, std).permute(0, 2, 3, 1).cpu().numpy()
    cols = min(ncols, len(pics))
    rows = math.ceil(len(pics) / cols)
    fig = new_figure(2.4 * cols, 2.6 * rows + (0.4 if suptitle else 0))
    for i, (pic, title) in enumerate(zip(pics, titles)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(pic)
        ax.set_title(title.replace(" | ", "\n"), fontsize=TITLE_FONTSIZE)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_FONTSIZE)
    return fig
