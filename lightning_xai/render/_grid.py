"""Manual layout of panel grids, and the text measures the tile grids (render/_mosaic.py) share.

Constrained layout asks every artist for its tight bounding box before the figure is drawn, which was half of
the time of a grid of tiles (benchmarks/figures.py). The grids here know where their texts are (titles, tick
and axis labels, a colour bar right of the grid, the figure title on top), so they measure those texts with the
figure's renderer and place the axes directly; the draw then runs once, with no layout engine. The figure's size
follows from the panels (or tiles) and the measured texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text

from lightning_xai._checks import expected

_MARGIN = 0.08  # around the figure, inches
_TITLE_PAD = 6.0 / 72.0  # axes title above its axes (matplotlib's axes.titlepad, 6 points)
_BAR_WIDTH = 0.16  # colour bar, inches
_BAR_PAD = 0.15  # grid -> colour bar, inches


def _extent(text: Text | None, renderer: Any) -> tuple[float, float]:
    """(width, height) of a text in inches; (0, 0) for none, an empty or an invisible one."""
    if text is None or not text.get_visible() or not text.get_text():
        return 0.0, 0.0
    text.set_parse_math(False)  # the renderers' texts are literal (render/_utils.py new_figure)
    box = text.get_window_extent(renderer)
    dpi = text.figure.dpi  # type: ignore[union-attr]
    return box.width / dpi, box.height / dpi


def _ticks_width(axis: Any, renderer: Any) -> float:
    """Widest tick label of ``axis`` (an y axis), inches, with the tick and its pad."""
    labels = axis.get_majorticklabels()
    if not labels:
        return 0.0
    widest = max(_extent(t, renderer)[0] for t in labels)
    tick = axis.get_major_ticks()[0]
    return widest + (tick.get_tick_padding() + tick.get_pad()) / 72.0


def _size(fig: Figure, width: float, height: float) -> tuple[float, float]:
    """Set the figure's size in inches rounded to whole pixels (its pixels then span exactly its axes)."""
    dpi = fig.dpi
    width, height = max(round(width * dpi), 1) / dpi, max(round(height * dpi), 1) / dpi
    fig.set_size_inches(width, height)
    return width, height


def suptitle_height(suptitle: Text | None, renderer: Any) -> float:
    """Room the figure title takes at the top, inches (0 without one)."""
    height = _extent(suptitle, renderer)[1]
    return height + 0.06 if height else 0.0


def place_suptitle(suptitle: Text | None, height: float) -> None:
    """Put the figure title (what ``fig.suptitle`` returned, if any) at the top margin of a figure ``height``
    inches tall."""
    if suptitle is not None:
        suptitle.set_y(1.0 - _MARGIN / height)
        suptitle.set_verticalalignment("top")


def colorbar_width(bar: Colorbar | None, renderer: Any) -> float:
    """Room the colour bar takes right of the grid, inches: pad, bar, tick labels and its label."""
    if bar is None:
        return 0.0
    label_w = _extent(bar.ax.yaxis.label, renderer)[0]
    return _BAR_PAD + _BAR_WIDTH + _ticks_width(bar.ax.yaxis, renderer) + (label_w + 0.06 if label_w else 0.0)


def colorbar_axes(fig: Figure) -> Axes:
    """An axes for a colour bar (placed later by :meth:`lightning_xai.render._mosaic.TileMosaic.arrange`)."""
    return fig.add_axes((0.0, 0.0, 1.0, 1.0))


def _margins(ax: Axes, renderer: Any) -> tuple[float, float, float, float]:
    """Room ``ax``'s texts take around its plot area, inches: (left, right, bottom, top) -- y tick labels and
    label, the last x tick label's overhang, x tick labels and label, the title."""
    ylabel_w = _extent(ax.yaxis.label, renderer)[0]
    left = _ticks_width(ax.yaxis, renderer) + (ylabel_w + ax.yaxis.labelpad / 72.0 if ylabel_w else 0.0)
    xticks = [t for t in ax.xaxis.get_majorticklabels() if t.get_visible() and t.get_text()]
    ticks_h = max((_extent(t, renderer)[1] for t in xticks), default=0.0)
    right = 0.0
    if xticks:
        tick = ax.xaxis.get_major_ticks()[0]
        ticks_h += (tick.get_tick_padding() + tick.get_pad()) / 72.0
        right = max(_extent(t, renderer)[0] for t in xticks) / 2  # the last label overhangs
    xlabel_h = _extent(ax.xaxis.label, renderer)[1]
    bottom = ticks_h + (xlabel_h + ax.xaxis.labelpad / 72.0 if xlabel_h else 0.0)
    title_h = _extent(ax.title, renderer)[1]
    return left, right, bottom, (title_h + _TITLE_PAD if title_h else 0.0)


def arrange_panels(fig: Figure, axes: Sequence[Axes], ncols: int, panel_w: float, panel_h: float,
                   suptitle: Text | None = None, gap: float = 0.25, legend: Legend | None = None) -> None:
    """Size ``fig`` and place panels with ticks (line plots) in ``ncols`` columns, ``panel_w`` x ``panel_h``
    inches each plot area, with uniform margins measured from every panel's titles, tick labels and axis labels;
    a figure ``legend`` (``loc="lower center"``) goes below the panels, in a strip of its own measured height.

    Example:
        >>> from lightning_xai.render._utils import new_figure
        >>> fig = new_figure(1.0, 1.0, layout=None)
        >>> panels = [fig.add_axes((0, 0, 1, 1)) for _ in range(3)]
        >>> _ = [ax.set_title("t") for ax in panels]
        >>> arrange_panels(fig, panels, ncols=2, panel_w=2.0, panel_h=1.5)
        >>> bool(panels[2].get_position().y0 < panels[0].get_position().y0)
        True
    """
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    margins = [_margins(ax, renderer) for ax in axes]
    left, right, bottom, top = (max(m[i] for m in margins) for i in range(4))
    rows = -(-len(axes) // ncols)
    cell_w, cell_h = left + panel_w + right, top + panel_h + bottom
    head = _MARGIN + suptitle_height(suptitle, renderer)
    foot = legend.get_window_extent(renderer).height / fig.dpi + gap / 2 if legend is not None else 0.0
    width = 2 * _MARGIN + ncols * cell_w + (ncols - 1) * gap
    height = head + rows * cell_h + (rows - 1) * gap + foot + _MARGIN
    width, height = _size(fig, width, height)
    for i, ax in enumerate(axes):
        r, c = divmod(i, ncols)
        x = _MARGIN + c * (cell_w + gap) + left
        y = height - head - r * (cell_h + gap) - top - panel_h
        ax.set_position((x / width, y / height, panel_w / width, panel_h / height))
    place_suptitle(suptitle, height)
    if legend is not None:
        legend.set_bbox_to_anchor((0.5, _MARGIN / height), transform=fig.transFigure)


def arrange_column(fig: Figure, axes: Sequence[Axes], panel_w: float, heights: Sequence[float],
                   gap: float = 0.12) -> None:
    """Size ``fig`` and stack ``axes`` top to bottom, each ``panel_w`` inches wide and ``heights[i]`` tall (plot
    areas), sharing one left edge; each gets the room its own title and x tick labels take (measured).

    Example:
        >>> from lightning_xai.render._utils import new_figure
        >>> fig = new_figure(1.0, 1.0, layout=None)
        >>> top, bottom = fig.add_axes((0, 0, 1, 1)), fig.add_axes((0, 0, 1, 1))
        >>> arrange_column(fig, [top, bottom], panel_w=3.0, heights=[2.0, 1.0])
        >>> bool(bottom.get_position().y1 < top.get_position().y0)
        True
        >>> float(round(top.get_position().height * fig.get_figheight(), 2))  # the plot area, inches
        2.0
    """
    if len(heights) != len(axes):
        raise ValueError(expected("heights", f"one height per axes ({len(axes)})", len(heights)))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    margins = [_margins(ax, renderer) for ax in axes]
    left, right = max(m[0] for m in margins), max(m[1] for m in margins)
    cells = [m[3] + h + m[2] for m, h in zip(margins, heights)]
    width, height = _size(fig, 2 * _MARGIN + left + panel_w + right,
                          2 * _MARGIN + sum(cells) + gap * (len(axes) - 1))
    y = height - _MARGIN
    for ax, (_, _, bottom, top), h, cell in zip(axes, margins, heights, cells):
        ax.set_position(((_MARGIN + left) / width, (y - top - h) / height, panel_w / width, h / height))
        y -= cell + gap
