"""Signed attributions (SHAP values) on text: the top tokens as bars, the sentence shaded token by token.

Tokens are drawn as text on a background coloured by their value (diverging colour map, symmetric range
centred at 0, ``±`` the 99th percentile of ``|values|``), wrapped to the figure's width. Sub-word pieces are
joined to the word they continue: WordPiece ``"##ing"`` (the ``##`` is dropped), and, when a sentence uses
them, SentencePiece ``"▁"`` / byte-level BPE ``"Ġ"`` word starts. Tokens whose ``mask`` entry is False
(padding, ``[CLS]``, ``[SEP]``) are left out of every panel; tokens with a NaN/inf value are drawn on grey and
left out of the rankings.

The layout is computed in inches from measured text widths (no constrained layout), so the figure's height
follows the number of wrapped lines and stays readable from 8 to a few hundred tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch  # noqa: F401  (the docstring examples use it)
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import check_positive_int, expected
from lightning_xai.render._overlay_tiles import _colormap
from lightning_xai.render._signed_scale import SHAP_LABEL, _symmetric_limit
from lightning_xai.render._text_layout import (
    _MARGIN,
    _colorbar,
    _Column,
    _draw_sentence,
    _fontsize,
    _layout,
    _lines_height,
    _Measure,
    _suptitle,
    _wrap,
)
from lightning_xai.render._text_tokens import _Token, _tokens, _top, _top_line
from lightning_xai.render._token_plot import token_plot
from lightning_xai.render._utils import SUPTITLE_FONTSIZE, TITLE_FONTSIZE, new_figure, wrap_text

# isort: split
# Defined in (or imported by) this module before it was split; re-exported so existing imports keep working.
from lightning_xai.render._signed_scale import _signed_colours  # noqa: F401
from lightning_xai.render._text_layout import _HAIR, _NAN_COLOUR, _PAD, _fit, _Placed  # noqa: F401
from lightning_xai.render._text_tokens import (  # noqa: F401
    _WORD_START,
    _bar_labels,
    _float_list,
    _short,
)
from lightning_xai.render._utils import LABEL_FONTSIZE, TICK_FONTSIZE  # noqa: F401

__all__ = ["token_grid", "token_plot"]


def token_grid(
    samples: Sequence[Sequence[Any]],
    suptitle: str | None = None,
    top_k: int = 8,
    cmap: str | Colormap = "RdBu_r",
    colorbar_label: str = SHAP_LABEL,
) -> Figure:
    """Several text samples, one row each: a title line listing its top tokens, then the shaded sentence.

    The colour range is shared by all rows (``±`` the 99th percentile of ``|values|`` over every visible
    token), with one colour bar at the bottom: made to be logged to TensorBoard once per epoch.

    Args:
        samples: One ``(tokens, values, mask, title)`` per sample (see :func:`token_plot`); ``mask`` and
            ``title`` may be None or left off.
        suptitle: Figure title, e.g. ``"KernelSHAP · epoch 3"``.
        top_k: Tokens (largest ``|value|`` first) listed in each row's title line.
        cmap: Diverging colour map; its centre is value 0.
        colorbar_label: Label of the colour bar.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas: one axes per sample and the colour bar.

    Raises:
        TypeError: If ``samples`` is not a list of 2- to 4-tuples, or an entry of one has the wrong type.
        ValueError: If ``samples`` is empty or ``values``/``mask`` do not hold one entry per token.

    Example:
        >>> fig = token_grid([
        ...     (["good", "movie"], torch.tensor([0.4, 0.1]), None, "positive"),
        ...     (["bad", "plot", "[PAD]"], torch.tensor([-0.5, 0.0, 0.0]), [1, 1, 0], "negative"),
        ... ])
        >>> len(fig.axes)
        3
        >>> fig.axes[1].get_title(loc="left")
        'negative — top: bad -0.5 · plot +0'
    """
    check_positive_int("top_k", top_k)
    if isinstance(samples, (str, Tensor)) or not isinstance(samples, Sequence):
        raise TypeError(
            expected("samples", "a list of (tokens, values, mask, title)", type(samples).__name__)
        )
    if len(samples) == 0:
        raise ValueError(expected("samples", "a non-empty list of (tokens, values, mask, title)", samples))
    rows: list[tuple[list[_Token], str | None]] = []
    for i, sample in enumerate(samples):
        if isinstance(sample, str) or not isinstance(sample, Sequence) or not 2 <= len(sample) <= 4:
            raise TypeError(expected(f"samples[{i}]", "a tuple (tokens, values, mask, title)", sample))
        mask = sample[2] if len(sample) > 2 else None
        title = sample[3] if len(sample) > 3 else None
        rows.append((_tokens(sample[0], sample[1], mask, prefix=f"samples[{i}]."), title))
    colormap = _colormap(cmap)
    every = [t.value for tokens, _ in rows for t in tokens]
    limit = _symmetric_limit(np.array(every, dtype=np.float64))
    norm = Normalize(-limit, limit)
    fontsize = _fontsize(max(len(tokens) for tokens, _ in rows))
    width = 9.0
    text_w = width - 2 * _MARGIN

    fig = new_figure(width, 6.0)
    fig.set_layout_engine("none")
    measure = _Measure(fig)
    column = _Column(width)
    if suptitle:
        wrapped_suptitle = wrap_text(suptitle, text_w, SUPTITLE_FONTSIZE)
        column.top += _lines_height(wrapped_suptitle, SUPTITLE_FONTSIZE)
    layouts = []
    for i, (tokens, title) in enumerate(rows):
        heading = _wrap(
            _top_line(None if title is None else str(title), _top(tokens, top_k)),
            text_w,
            TITLE_FONTSIZE,
            measure,
        )
        placed, lines = _layout(tokens, text_w, fontsize, measure)
        layouts.append((heading, placed, lines))
        column.add(
            f"row{i}",
            lines * fontsize * 1.8 / 72.0,
            gap_before=_lines_height(heading, TITLE_FONTSIZE) + (0.12 if i == 0 else 0.3),
        )
    column.add("colorbar", 0.13, left=(width - 4.0) / 2, width=4.0, gap_before=0.25)
    column.top += 0.4
    axes = column.finish(fig)
    for i, (heading, placed, lines) in enumerate(layouts):
        ax = axes[f"row{i}"]
        _draw_sentence(ax, placed, lines, text_w, fontsize, norm, colormap)
        ax.set_title(heading, fontsize=TITLE_FONTSIZE, loc="left", pad=3.0)
    _colorbar(fig, axes["colorbar"], norm, colormap, colorbar_label, every)
    if suptitle:
        _suptitle(fig, wrapped_suptitle)
    return fig
