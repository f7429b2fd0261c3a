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

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch  # noqa: F401  (the docstring examples use it)
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle
from torch import Tensor

from lightning_xai._checks import check_positive_int, expected
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    TITLE_FONTSIZE,
    new_figure,
    wrap_text,
)
from lightning_xai.render.overlay import _colormap
from lightning_xai.render.shap import SHAP_LABEL, _signed_colours, _symmetric_limit

__all__ = ["token_grid", "token_plot"]

_MARGIN = 0.3  # figure margin, inches
_PAD = 0.035  # text padding inside a token's box, inches
_HAIR = 0.012  # gap between the pieces of one word, inches
_NAN_COLOUR = (0.86, 0.86, 0.86, 1.0)
_WORD_START = ("▁", "Ġ")


@dataclass
class _Token:
    index: int  # position in the input sequence
    raw: str
    text: str  # what is drawn
    value: float
    joined: bool  # continues the previous visible token's word
    word: str = ""  # the whole word it belongs to


def _float_list(name: str, values: Any, length: int) -> list[float]:
    if isinstance(values, Tensor):
        flat = values.detach().cpu().double().reshape(-1).tolist() if values.ndim <= 1 else None
    elif isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, str):
        try:
            flat = [float(v) for v in values]
        except (TypeError, ValueError):
            raise TypeError(expected(name, "a tensor or sequence of numbers", values)) from None
    else:
        raise TypeError(expected(name, "a 1-D tensor of shape (T,)", type(values).__name__))
    if flat is None or len(flat) != length:
        shape = tuple(values.shape) if isinstance(values, Tensor) else len(flat or [])
        raise ValueError(expected(name, f"of shape (T,) = ({length},), one per token", shape))
    return flat


def _tokens(tokens: Any, values: Any, mask: Any, prefix: str = "") -> list[_Token]:
    """Check one sample and return its visible tokens, word pieces marked."""
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(expected(f"{prefix}tokens", "a list of strings", tokens))
    count = len(tokens)
    scores = _float_list(f"{prefix}values", values, count)
    keep = [True] * count if mask is None else [bool(m) for m in _float_list(f"{prefix}mask", mask, count)]
    visible = [i for i in range(count) if keep[i]]
    pieces = [str(tokens[i]) for i in visible]
    marked = any(p.startswith(_WORD_START) for p in pieces)
    out: list[_Token] = []
    for i, raw in zip(visible, pieces):
        if marked:
            joined, text = not raw.startswith(_WORD_START), raw.lstrip("".join(_WORD_START))
        else:
            joined, text = raw.startswith("##") and len(raw) > 2, raw.removeprefix("##")
        out.append(_Token(i, raw, text or raw, scores[i], joined and bool(out)))
    start = 0
    for j in range(1, len(out) + 1):
        if j == len(out) or not out[j].joined:
            word = "".join(t.text for t in out[start:j])
            for t in out[start:j]:
                t.word = word
            start = j
    return out


#: A laid-out token: (token, drawn text, x, line, box width), inches.
_Placed = tuple[_Token, str, float, int, float]


def _top(tokens: list[_Token], top_k: int) -> list[_Token]:
    finite = [t for t in tokens if math.isfinite(t.value)]
    return sorted(finite, key=lambda t: -abs(t.value))[:top_k]


def _bar_labels(top: list[_Token], visible: list[_Token]) -> list[str]:
    """``"##ful (wonderful)"`` for pieces; ``"the @7"`` (input position) for tokens the sentence repeats."""
    counts = Counter(t.raw for t in visible)
    labels = [_short(t.raw if t.word == t.text else f"{t.raw} ({t.word})") for t in top]
    labels = [f"{label} @{t.index}" if counts[t.raw] > 1 else label for label, t in zip(labels, top)]
    return [_literal(label) for label in labels]


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _literal(text: str) -> str:
    """Escape ``$`` so that token text is never read as mathtext."""
    return text.replace("$", r"\$")


def _fontsize(count: int) -> float:
    return 10.0 if count <= 48 else 9.0 if count <= 96 else 8.0


class _Measure:
    """Text widths in inches, measured by the figure's Agg renderer."""

    def __init__(self, fig: Figure) -> None:
        self._renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        self._dpi = fig.dpi

    def __call__(self, text: str, fontsize: float) -> float:
        width, _, _ = self._renderer.get_text_width_height_descent(text, FontProperties(size=fontsize),
                                                                   ismath=False)
        return width / self._dpi


def _fit(text: str, width: float, fontsize: float, measure: _Measure) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` inches."""
    while len(text) > 1 and measure(text, fontsize) > width:
        text = text[:-2] + "…"
    return text


def _layout(
    tokens: list[_Token], width: float, fontsize: float, measure: _Measure
) -> tuple[list[_Placed], int]:
    """Place each token: ``(token, text, x, line, box_width)`` in inches, whole words kept on one line."""
    boxes: list[tuple[_Token, str, float]] = []
    for j, t in enumerate(tokens):
        left = _HAIR if t.joined else _PAD
        right = _HAIR if j + 1 < len(tokens) and tokens[j + 1].joined else _PAD
        text = _fit(t.text, width - left - right, fontsize, measure)
        boxes.append((t, text, measure(text, fontsize) + left + right))
    space = measure("a a", fontsize) - measure("aa", fontsize) + 0.02
    placed: list[_Placed] = []
    x, line, j = 0.0, 0, 0
    while j < len(boxes):
        end = j + 1
        while end < len(boxes) and boxes[end][0].joined:
            end += 1
        word_width = sum(b[2] for b in boxes[j:end]) + _HAIR * (end - j - 1)
        gap = space if x > 0 else 0.0
        if x > 0 and x + gap + word_width > width:
            x, line, gap = 0.0, line + 1, 0.0
        x += gap
        for k in range(j, end):
            token, text, box = boxes[k]
            if x > 0 and x + box > width:  # a word wider than the line: break between its pieces
                x, line = 0.0, line + 1
            placed.append((token, text, x, line, box))
            x += box + _HAIR
        x -= _HAIR
        j = end
    return placed, (line + 1 if placed else 1)


def _draw_sentence(
    ax: Any, placed: list[_Placed], lines: int, width: float, fontsize: float, norm: Normalize, cmap: Colormap
) -> None:
    """Draw laid-out tokens into ``ax``, whose data units are inches (y down)."""
    line_h = fontsize * 1.8 / 72.0
    box_h = fontsize * 1.45 / 72.0
    ax.set_xlim(0.0, width)
    ax.set_ylim(lines * line_h, 0.0)
    ax.set_axis_off()
    for token, text, x, line, box in placed:
        finite = math.isfinite(token.value)
        colour = cmap(norm(token.value)) if finite else _NAN_COLOUR
        y = line * line_h + (line_h - box_h) / 2
        ax.add_patch(Rectangle((x, y), box, box_h, facecolor=colour, edgecolor="none"))
        dark = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] < 0.5
        left = _HAIR if token.joined else _PAD
        ax.text(x + left, y + box_h / 2, text, fontsize=fontsize, ha="left", va="center_baseline",
                color="white" if dark else ("0.45" if not finite else "black"), parse_math=False)
    if not placed:
        ax.text(0.0, line_h / 2, "(no tokens to show)", fontsize=fontsize, va="center", color="0.4")


def _colorbar(fig: Figure, rect: tuple[float, float, float, float], norm: Normalize, cmap: Colormap,
              label: str, values: list[float]) -> None:
    finite = [abs(v) for v in values if math.isfinite(v)]
    over = bool(finite) and max(finite) > norm.vmax
    cax = fig.add_axes(rect)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal",
                       extend="both" if over else "neither")
    bar.set_label(label, fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)


class _Column:
    """Stacks panels from the top of a figure of fixed width; heights and positions in inches."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.items: list[tuple[str, float, float, float, float]] = []  # (name, left, width, top, height)
        self.top = _MARGIN

    def add(self, name: str, height: float, left: float = _MARGIN, width: float | None = None,
            gap_before: float = 0.0) -> None:
        self.top += gap_before
        span = self.width - 2 * _MARGIN if width is None else width
        self.items.append((name, left, span, self.top, height))
        self.top += height

    def finish(self, fig: Figure) -> dict[str, Any]:
        height = self.top + _MARGIN
        fig.set_size_inches(self.width, height)
        axes = {}
        for name, left, span, top, h in self.items:
            rect = (left / self.width, 1.0 - (top + h) / height, span / self.width, h / height)
            axes[name] = rect if name.startswith("colorbar") else fig.add_axes(rect)
        return axes


def _wrap(text: str, width: float, fontsize: float, measure: _Measure) -> str:
    """Greedy word wrap of ``text`` to ``width`` inches, from measured widths."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and measure(f"{lines[-1]} {word}", fontsize) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def _suptitle(fig: Figure, text: str) -> None:
    """The figure title in the top margin (the layout is manual, so its place is set here)."""
    fig.suptitle(text, fontsize=SUPTITLE_FONTSIZE, y=1.0 - 0.6 * _MARGIN / fig.get_size_inches()[1], va="top")


def _lines_height(text: str, fontsize: float) -> float:
    return (text.count("\n") + 1) * fontsize * 1.3 / 72.0


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
    column.add("bars", 0.27 * max(len(top), 1) + 0.1, left=_MARGIN + label_w, width=text_w - label_w - 0.1,
               gap_before=0.3)
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
        bars.text(s + (0.03 if s >= 0 else -0.03) * reach, y, f"{s:+.3g}", va="center",
                  ha="left" if s >= 0 else "right", fontsize=TICK_FONTSIZE)
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


def _top_line(title: str | None, top: list[_Token]) -> str:
    listed = " · ".join(f"{_literal(_short(t.raw))} {t.value:+.2g}" for t in top)
    head = f"{title} — " if title else ""
    return f"{head}top: {listed}" if top else f"{head}(no finite values)"


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
        raise TypeError(expected("samples", "a list of (tokens, values, mask, title)", type(samples).__name__))
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
        heading = _wrap(_top_line(None if title is None else str(title), _top(tokens, top_k)), text_w,
                        TITLE_FONTSIZE, measure)
        placed, lines = _layout(tokens, text_w, fontsize, measure)
        layouts.append((heading, placed, lines))
        column.add(f"row{i}", lines * fontsize * 1.8 / 72.0,
                   gap_before=_lines_height(heading, TITLE_FONTSIZE) + (0.12 if i == 0 else 0.3))
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
