"""One text sample's signed attributions (SHAP values): its top tokens as bars, the sentence shaded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch  # noqa: F401  (the docstring examples use it)
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import check_positive_int
from lightning_xai.render._overlay_tiles import _colormap
from lightning_xai.render._signed_scale import SHAP_LABEL, _signed_colours, _symmetric_limit
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
)
from lightning_xai.render._text_tokens import _bar_labels, _tokens, _top
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    TITLE_FONTSIZE,
    new_figure,
    wrap_text,
)

__all__ = ["token_plot"]


def token_plot(
    tokens: Sequence[str],
    values: Tensor | Sequence[float],
    title: str | None = None,
    top_k: int = 10,
    mask: Tensor | Sequence[bool] | None = None,
    cmap: str | Colormap = "RdBu_r",
    colorbar_label: str = SHAP_LABEL,
) -> Figure:
    """One text sample: its top tokens by ``|SHAP|`` as signed bars, and the sentence shaded by value.

    Args:
        tokens: The ``T`` tokens as strings (e.g. ``tokenizer.convert_ids_to_tokens(ids)``).
        values: Signed values ``(T,)``, one per token (already summed over the embedding dimension).
        title: Figure title, e.g. ``"true: positive | pred: positive (0.98)"``.
        top_k: Number of tokens in the bar chart (fewer if fewer are visible).
        mask: ``(T,)`` booleans, False for padding and special tokens, which are left out of both panels.
        cmap: Diverging colour map; its centre is value 0.
        colorbar_label: Label of the colour bar and of the bars' axis.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas and three axes: bars, sentence, colour bar.

    Raises:
        TypeError: If ``tokens`` is not a list of strings or ``values``/``mask`` are not sequences.
        ValueError: If ``values``/``mask`` do not hold one entry per token or ``top_k`` is not positive.

    Example:
        >>> tokens = ["[CLS]", "a", "wonder", "##ful", "film", "[SEP]"]
        >>> fig = token_plot(tokens, torch.tensor([0.0, 0.1, 0.5, 0.3, -0.2, 0.0]), title="positive",
        ...                  mask=torch.tensor([0, 1, 1, 1, 1, 0]).bool())
        >>> len(fig.axes)
        3
        >>> [t.get_text() for t in fig.axes[1].texts]  # the sentence, "##ful" joined to "wonder"
        ['a', 'wonder', 'ful', 'film']
    """
    check_positive_int("top_k", top_k)
    visible = _tokens(tokens, values, mask)
    top = _top(visible, top_k)
    colormap = _colormap(cmap)
    positive, negative = _signed_colours(cmap)
    limit = _symmetric_limit(np.array([t.value for t in visible], dtype=np.float64))
    norm = Normalize(-limit, limit)
    fontsize = _fontsize(len(visible))

    fig = new_figure(8.0, 6.0)
    fig.set_layout_engine("none")
    measure = _Measure(fig)
    labels = _bar_labels(top, visible)
    label_w = max((measure(s, TICK_FONTSIZE) for s in labels), default=0.5) + 0.15
    text_w = 8.0 - 2 * _MARGIN
    placed, lines = _layout(visible, text_w, fontsize, measure)
    column = _Column(8.0)
    if title:
        wrapped_title = wrap_text(title, text_w, SUPTITLE_FONTSIZE)
        column.top += _lines_height(wrapped_title, SUPTITLE_FONTSIZE)
    column.add(
        "bars",
        0.27 * max(len(top), 1) + 0.1,
        left=_MARGIN + label_w,
        width=text_w - label_w - 0.1,
        gap_before=0.3,
    )
    column.add("sentence", lines * fontsize * 1.8 / 72.0, gap_before=0.95)
    column.add("colorbar", 0.13, left=(8.0 - 4.0) / 2, width=4.0, gap_before=0.15)
    column.top += 0.4  # colour bar ticks and label
    axes = column.finish(fig)

    bars = axes["bars"]
    scores = [t.value for t in top]
    ypos = np.arange(len(top))
    bars.barh(ypos, scores, height=0.7, color=[positive if s >= 0 else negative for s in scores])
    bars.axvline(0.0, color="0.3", linewidth=0.7)
    bars.set_yticks(ypos, labels, fontsize=TICK_FONTSIZE)
    bars.set_ylim(max(len(top), 1) - 0.5, -0.5)
    reach = max((abs(s) for s in scores), default=1.0) or 1.0
    low, high = min(min(scores, default=0.0), 0.0), max(max(scores, default=0.0), 0.0)
    bars.set_xlim(low - 0.3 * reach, high + 0.3 * reach)
    for y, s in zip(ypos, scores):
        bars.text(
            s + (0.03 if s >= 0 else -0.03) * reach,
            y,
            f"{s:+.3g}",
            va="center",
            ha="left" if s >= 0 else "right",
            fontsize=TICK_FONTSIZE,
        )
    bars.set_xlabel(colorbar_label, fontsize=LABEL_FONTSIZE)
    bars.tick_params(axis="x", labelsize=TICK_FONTSIZE)
    bars.set_title(f"top {len(top)} tokens by |SHAP value|", fontsize=TITLE_FONTSIZE, loc="left")
    for side in ("top", "right"):
        bars.spines[side].set_visible(False)

    sentence = axes["sentence"]
    _draw_sentence(sentence, placed, lines, text_w, fontsize, norm, colormap)
    sentence.set_title(f"{len(visible)} tokens, shaded by SHAP value", fontsize=TITLE_FONTSIZE, loc="left")
    _colorbar(fig, axes["colorbar"], norm, colormap, colorbar_label, [t.value for t in visible])
    if title:
        _suptitle(fig, wrapped_title)
    return fig
