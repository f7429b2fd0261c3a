"""Manual layout of token figures, in inches from measured text widths: wrapping, shaded tokens, panels."""

from __future__ import annotations

import math
from typing import Any

from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle

from lightning_xai.render._text_tokens import _Token
from lightning_xai.render._utils import LABEL_FONTSIZE, SUPTITLE_FONTSIZE, TICK_FONTSIZE

_MARGIN = 0.3  # figure margin, inches
_PAD = 0.035  # text padding inside a token's box, inches
_HAIR = 0.012  # gap between the pieces of one word, inches
_NAN_COLOUR = (0.86, 0.86, 0.86, 1.0)

#: A laid-out token: (token, drawn text, x, line, box width), inches.
_Placed = tuple[_Token, str, float, int, float]


def _fontsize(count: int) -> float:
    return 10.0 if count <= 48 else 9.0 if count <= 96 else 8.0


class _Measure:
    """Text widths in inches, measured by the figure's Agg renderer."""

    def __init__(self, fig: Figure) -> None:
        self._renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        self._dpi = fig.dpi

    def __call__(self, text: str, fontsize: float) -> float:
        width, _, _ = self._renderer.get_text_width_height_descent(
            text, FontProperties(size=fontsize), ismath=False
        )
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
        ax.text(
            x + left,
            y + box_h / 2,
            text,
            fontsize=fontsize,
            ha="left",
            va="center_baseline",
            color="white" if dark else ("0.45" if not finite else "black"),
            parse_math=False,
        )
    if not placed:
        ax.text(0.0, line_h / 2, "(no tokens to show)", fontsize=fontsize, va="center", color="0.4")


def _colorbar(
    fig: Figure,
    rect: tuple[float, float, float, float],
    norm: Normalize,
    cmap: Colormap,
    label: str,
    values: list[float],
) -> None:
    finite = [abs(v) for v in values if math.isfinite(v)]
    over = bool(finite) and max(finite) > norm.vmax
    cax = fig.add_axes(rect)
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        cax=cax,
        orientation="horizontal",
        extend="both" if over else "neither",
    )
    bar.set_label(label, fontsize=LABEL_FONTSIZE)
    bar.ax.tick_params(labelsize=TICK_FONTSIZE)


class _Column:
    """Stacks panels from the top of a figure of fixed width; heights and positions in inches."""

    def __init__(self, width: float) -> None:
        self.width = width
        self.items: list[tuple[str, float, float, float, float]] = []  # (name, left, width, top, height)
        self.top = _MARGIN

    def add(
        self,
        name: str,
        height: float,
        left: float = _MARGIN,
        width: float | None = None,
        gap_before: float = 0.0,
    ) -> None:
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
