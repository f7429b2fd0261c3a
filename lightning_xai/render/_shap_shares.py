"""Per-modality shares of the total |SHAP| of each sample, as stacked 100 % bars."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    check_titles,
    new_figure,
    wrap_text,
)

__all__ = ["modality_shares"]


def modality_shares(
    shares: Tensor | Sequence[Sequence[float]],
    names: Sequence[str],
    title: str | None = None,
    labels: Sequence[str] | None = None,
    quantity: str = "SHAP",
) -> Figure:
    """How the total ``|SHAP|`` of each sample splits over its inputs: one stacked 100 % bar per sample.

    Args:
        shares: Non-negative ``(B, M)`` (or ``(M,)`` for one sample): total ``|SHAP|`` (or shares) per input,
            e.g. ``pixel_values`` and ``input_ids``; each row is scaled to 100 %. NaN/inf count as 0.
        names: The ``M`` input names, for the legend.
        title: Figure title.
        labels: One label per sample (row); ``"sample i"`` by default.
        quantity: What is split (the x label reads "share of total |quantity| (%)"), e.g. a method's name.

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
        ax.barh(
            ypos,
            percent[:, m],
            left=left,
            height=0.7,
            color=palette[m],
            label=names[m],
            edgecolor="white",
            linewidth=0.8,
        )
        for y in ypos:
            if percent[y, m] >= 6.0:
                dark = 0.299 * palette[m][0] + 0.587 * palette[m][1] + 0.114 * palette[m][2] < 0.55
                ax.text(
                    left[y] + percent[y, m] / 2,
                    y,
                    f"{percent[y, m]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=TICK_FONTSIZE,
                    color="white" if dark else "black",
                )
        left += percent[:, m]
    for y in ypos[totals[:, 0].numpy() <= 0]:
        ax.text(50.0, y, "no attribution", ha="center", va="center", fontsize=TICK_FONTSIZE, color="0.4")
    ax.set_yticks(ypos, [wrap_text(r, 1.8, TICK_FONTSIZE) for r in rows], fontsize=TICK_FONTSIZE)
    ax.set_ylim(count - 0.5, -0.5)
    ax.set_xlim(0.0, 100.0)
    ax.set_xlabel(f"share of total |{quantity}| (%)", fontsize=LABEL_FONTSIZE)
    ax.tick_params(axis="x", labelsize=TICK_FONTSIZE)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncols=min(modalities, 4),
        fontsize=LABEL_FONTSIZE,
        frameon=False,
        borderaxespad=0.0,
    )
    if title:
        fig.suptitle(wrap_text(title, 7.0, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig
