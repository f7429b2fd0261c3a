"""Attention figures: a layer x head grid of attention heatmaps (token x token matrices with the tokens on both axes
for text, the class-token row on the patch grid for images), on one shared colour scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch  # noqa: F401  (the docstring example uses it)
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    TITLE_FONTSIZE,
    new_figure,
)

__all__ = ["attention_heads_grid"]

_MAX_LABELLED = 24  # token labels on the axes up to this many tokens


def attention_heads_grid(maps: Tensor | np.ndarray, row_titles: Sequence[str], column_titles: Sequence[str],
                         tokens: Sequence[str] | None = None, suptitle: str | None = None,
                         cmap: str = "viridis", colorbar_label: str = "attention") -> Figure:
    """Rows are layers, columns heads (and e.g. their mean): one heatmap per cell on one colour scale from 0.

    Args:
        maps: ``(rows, columns, A, B)`` non-negative maps: ``(N, N)`` query x key matrices, or patch grids.
        row_titles: one label per row (``"layer 0"``).
        column_titles: one title per column (``"head 0"``, ``"mean"``).
        tokens: ``A`` token strings labelling both axes of query x key matrices (shown up to 24 tokens).
        suptitle: figure title.
        cmap: colour map.
        colorbar_label: the colour bar's label.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas and one colour bar.

    Example:
        >>> fig = attention_heads_grid(torch.rand(2, 3, 5, 5), ["layer 0", "layer 1"], ["head 0", "head 1", "mean"],
        ...                            tokens=list("abcde"))
        >>> len(fig.axes)  # 6 tiles and the colour bar
        7
    """
    array = np.asarray(maps.detach().float().cpu() if isinstance(maps, Tensor) else maps, dtype=np.float64)
    if array.ndim != 4:
        raise ValueError(expected("maps", "a (rows, columns, A, B) array", array.shape))
    rows, cols = array.shape[:2]
    if len(row_titles) != rows or len(column_titles) != cols:
        raise ValueError(expected("row_titles/column_titles", f"{rows} and {cols} titles",
                                  (len(row_titles), len(column_titles))))
    labelled = tokens is not None and len(tokens) == array.shape[2] == array.shape[3] and len(tokens) <= _MAX_LABELLED
    tile = 2.4 if labelled else 1.6
    fig = new_figure(tile * cols + 1.2, tile * rows + (0.6 if suptitle else 0.2))
    axes = fig.subplots(rows, cols, squeeze=False)
    finite = array[np.isfinite(array)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    shown = None
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            shown = ax.imshow(np.nan_to_num(array[r, c]), cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if labelled and r == rows - 1:
                ax.set_xticks(range(len(tokens)), [str(t) for t in tokens], rotation=90,  # type: ignore[arg-type]
                              fontsize=TICK_FONTSIZE)
            if labelled and c == 0:
                ax.set_yticks(range(len(tokens)), [str(t) for t in tokens], fontsize=TICK_FONTSIZE)  # type: ignore[arg-type]
            if r == 0:
                ax.set_title(column_titles[c], fontsize=TITLE_FONTSIZE)
        axes[r, 0].set_ylabel(row_titles[r], fontsize=LABEL_FONTSIZE)
    bar = fig.colorbar(shown, ax=axes, shrink=0.8, pad=0.02)
    bar.set_label(colorbar_label, fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)
    if suptitle:
        fig.suptitle(suptitle, fontsize=SUPTITLE_FONTSIZE)
    return fig
