"""Tile grids in ONE axes: tiles composed into images placed in inches, the texts measured once (render/_grid.py).

An axes costs ~5-7 ms to create and more to draw (its patch, spines, title and label artists, transforms), so a
grid of one axes per tile was most of the time of the callbacks' tile figures (benchmarks/figures.py). A
:class:`TileMosaic` draws the whole grid in a single axes with its axis off, whose data coordinates are inches:
x rightwards from the grid's left edge, y downwards from its top (the first row's titles included). Tiles that
share one colour map and scale are ONE :class:`TileImage` (:meth:`TileMosaic.composite`: composed on the
renderer's pixels, no resampling by matplotlib), what it would not draw alike an ``imshow(..., extent=...)`` in
its cell (:meth:`TileMosaic.image`); each tile title and row label is an ``ax.text`` where an axes title or y
label used to be, thin tile frames one :class:`~matplotlib.collections.LineCollection`. The texts are measured
with the figure's renderer before anything is placed, and the figure's size follows from tiles and texts; the
colour bar keeps an axes of its own (:func:`~lightning_xai.render._grid.colorbar_axes`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text
from matplotlib.ticker import NullLocator
from matplotlib.transforms import Affine2D, IdentityTransform

from lightning_xai.render._grid import (
    _BAR_PAD,
    _BAR_WIDTH,
    _MARGIN,
    _TITLE_PAD,
    _extent,
    _size,
    colorbar_width,
    place_suptitle,
    suptitle_height,
)

__all__ = ["TileImage", "TileMosaic"]

Box = tuple[float, float, float, float]  # x0, y0 (top), width, height in inches, grid coordinates


class TileMosaic:
    """A ``rows`` x ``cols`` grid of tiles in one axes of ``fig`` (``mosaic.ax``), laid out by :meth:`arrange`.

    Texts first (:meth:`title`, :meth:`row_label`), then :meth:`arrange` (sizes the figure from them), then the
    tiles (:meth:`composite`, :meth:`image`: their cells are known once arranged) and :meth:`frames`.

    Example:
        >>> from lightning_xai.render._utils import new_figure
        >>> fig = new_figure(1.0, 1.0, layout=None)
        >>> mosaic = TileMosaic(fig, rows=2, cols=3)
        >>> mosaic.arrange(tile_w=1.0, tile_h=1.0)
        >>> [round(float(v), 2) for v in fig.get_size_inches()]
        [3.36, 2.26]
        >>> mosaic.extent(1, 2)  # (left, right, bottom, top) of the last tile, inches from the grid's top left
        (2.2, 3.2, 2.1, 1.1)
    """

    def __init__(self, fig: Figure, rows: int, cols: int) -> None:
        self.fig, self.rows, self.cols = fig, rows, cols
        self.ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        self.ax.set_axis_off()
        for axis in (self.ax.xaxis, self.ax.yaxis):  # no ticks made, not even by a walk over the artists
            axis.set_major_locator(NullLocator())
        self._titles: dict[tuple[int, int], Text] = {}
        self._labels: dict[int, Text] = {}
        self._boxes: dict[tuple[int, int], Box] = {}  # the area each drawn tile covers (its frame)
        self._cells: np.ndarray = np.zeros((rows, cols, 2))  # top-left corner of each cell, inches
        self._tile = (1.0, 1.0)

    def title(self, row: int, col: int, text: str, fontsize: float) -> Text:
        """A title above tile ``(row, col)``, where its axes title would be (centred, 6 points above)."""
        label = self.ax.text(0.0, 0.0, text, fontsize=fontsize, ha="center", va="baseline", parse_math=False)
        self._titles[row, col] = label
        return label

    def row_label(self, row: int, text: str, fontsize: float) -> Text:
        """A label left of ``row``, where the y label of its first tile would be (vertical, centred)."""
        label = self.ax.text(0.0, 0.0, text, fontsize=fontsize, ha="center", va="bottom", rotation=90,
                             rotation_mode="anchor", parse_math=False)
        self._labels[row] = label
        return label

    def arrange(self, tile_w: float, tile_h: float, bar: Colorbar | None = None, suptitle: Text | None = None,
                gap: float = 0.1, bar_shrink: float = 1.0) -> None:
        """Size the figure and place the grid, its texts and the colour bar ``bar`` (created with ``cax=`` on an
        axes of this figure, spanning ``bar_shrink`` of the grid's height right of it).

        Each tile is ``tile_w`` x ``tile_h`` inches, ``gap`` apart; above each row the room of its tallest title,
        left of the grid the room of the widest row label, on top the figure title ``suptitle`` (what
        ``fig.suptitle`` returned).
        """
        renderer = self.fig.canvas.get_renderer()  # type: ignore[attr-defined]
        title_h = [0.0] * self.rows
        for (r, _), text in self._titles.items():
            title_h[r] = max(title_h[r], _extent(text, renderer)[1])
        title_h = [h + _TITLE_PAD if h else 0.0 for h in title_h]
        label_pad = float(mpl.rcParams["axes.labelpad"]) / 72.0
        label_w = max((_extent(t, renderer)[0] for t in self._labels.values()), default=0.0)
        left = _MARGIN + (label_w + label_pad if label_w else 0.0)
        top = _MARGIN + suptitle_height(suptitle, renderer)
        tops = np.cumsum(title_h) + np.arange(self.rows) * (tile_h + gap)
        grid_w = self.cols * tile_w + (self.cols - 1) * gap
        grid_h = float(tops[-1]) + tile_h
        width, height = _size(self.fig, left + grid_w + colorbar_width(bar, renderer) + _MARGIN,
                              top + grid_h + _MARGIN)
        self._tile = (tile_w, tile_h)
        self._cells[..., 0] = np.arange(self.cols) * (tile_w + gap)
        self._cells[..., 1] = tops[:, None]
        left = round(left * self.fig.dpi) / self.fig.dpi  # the grid's origin on a pixel (tile edges crisp)
        bottom = round((height - top - grid_h) * self.fig.dpi) / self.fig.dpi
        self.ax.set_position((left / width, bottom / height, grid_w / width, grid_h / height))
        self.ax.set_xlim(0.0, grid_w)  # inches, and no autoscaling by the images to come
        self.ax.set_ylim(grid_h, 0.0)  # downwards: row 0 on top
        for (r, c), text in self._titles.items():
            text.set_position((self._cells[r, c, 0] + tile_w / 2, tops[r] - _TITLE_PAD))
        for r, text in self._labels.items():
            text.set_position((-label_pad, tops[r] + tile_h / 2))
        if bar is not None:
            bar_h = grid_h * bar_shrink
            bar.ax.set_position(((left + grid_w + _BAR_PAD) / width, (bottom + (grid_h - bar_h) / 2) / height,
                                 _BAR_WIDTH / width, bar_h / height))
        place_suptitle(suptitle, height)

    def extent(self, row: int, col: int) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` of cell ``(row, col)`` in the axes' data coordinates (an ``imshow``
        ``extent`` that puts the array's row 0 on top with ``origin="upper"``)."""
        x0, y0 = (float(v) for v in self._cells[row, col])
        return x0, x0 + self._tile[0], y0 + self._tile[1], y0

    def _box(self, row: int, col: int, shape: tuple[int, ...], keep_aspect: bool) -> Box:
        """``(x0, y0, width, height)`` a ``shape`` array covers in cell ``(row, col)``: all of it, or with
        ``keep_aspect`` the largest box of the array's aspect, centred (as an axes with ``aspect="equal"``)."""
        x0, x1, y1, y0 = self.extent(row, col)
        w, h = x1 - x0, y1 - y0
        if keep_aspect:
            rows, cols = shape[:2]
            scale = min(w / cols, h / rows)
            x0, y0, w, h = x0 + (w - cols * scale) / 2, y0 + (h - rows * scale) / 2, cols * scale, rows * scale
        return x0, y0, w, h

    def image(self, row: int, col: int, array: Any, keep_aspect: bool = False, **kwargs: Any) -> AxesImage:
        """An ``imshow`` of ``array`` over cell ``(row, col)`` (``kwargs`` as for ``imshow``, ``keep_aspect`` as
        for :meth:`composite`), matplotlib's own resampling: for what a :class:`TileImage` does not draw alike
        (a map drawn bilinear less than 3 times enlarged, which matplotlib colours before it interpolates, or an
        image antialiased as it shrinks)."""
        x0, y0, w, h = self._boxes[row, col] = self._box(row, col, np.shape(array), keep_aspect)
        return self.ax.imshow(array, extent=(x0, x0 + w, y0 + h, y0), aspect="auto", **kwargs)

    def composite(self, tiles: Mapping[tuple[int, int], np.ndarray], keep_aspect: Collection[tuple[int, int]] = (),
                  **kwargs: Any) -> TileImage:
        """ONE image of many tiles (a :class:`TileImage`; ``kwargs`` such as ``cmap``, ``norm``, ``alpha`` and
        ``interpolation`` go to it), each covering its cell (``keep_aspect``: the cells whose tile keeps its own
        aspect, centred). Drawn in the order made: a second composite lies over the first."""
        placed = []
        for (row, col), tile in tiles.items():
            self._boxes[row, col] = box = self._box(row, col, tile.shape, (row, col) in keep_aspect)
            placed.append((box, tile))
        image = TileImage(self.ax, placed, **kwargs)
        self.ax.add_image(image)
        return image

    def frames(self) -> LineCollection:
        """A thin frame (an axes' spines: ``axes.linewidth``, ``axes.edgecolor``) around every tile drawn."""
        outlines = [[(x, y), (x + w, y), (x + w, y + h), (x, y + h), (x, y)] for x, y, w, h in self._boxes.values()]
        lines = LineCollection(outlines, linewidths=mpl.rcParams["axes.linewidth"],
                               colors=mpl.rcParams["axes.edgecolor"], zorder=2.5, capstyle="projecting",
                               joinstyle="miter")
        self.ax.add_collection(lines, autolim=False)
        return lines


class TileImage(AxesImage):
    """ONE image of many tiles, composed on the renderer's own pixels: each tile resized to the whole pixels its
    box covers and copied into one canvas, which is drawn as it is. Drawing it costs a copy of the tiles, where an
    image per tile (or a composed image that matplotlib resamples) costs a float resampling, premultiplication and
    colour conversion of every pixel, an axes per tile more still.

    A tile is ``(h, w, 4)`` ``uint8`` RGBA (resized nearest), or ``(h, w)`` values (NaN, inf or masked:
    transparent) resized with ``interpolation`` (``"nearest"`` or ``"bilinear"``, as ``imshow``'s on the data),
    then coloured by the image's ``norm`` and ``cmap`` and made ``alpha`` opaque. Its array (``get_array()``) is
    the RGBA canvas at the figure's dpi, row 0 on top; ``extent`` spans the axes' limits; ``boxes`` are the
    tiles' boxes in data coordinates (``(x0, y0, width, height)``, y downwards) and ``tiles`` their arrays.
    """

    def __init__(self, ax: Any, tiles: list[tuple[Box, np.ndarray]], alpha: float | None = None,
                 interpolation: str = "nearest", **kwargs: Any) -> None:
        (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
        super().__init__(ax, interpolation=interpolation, origin="upper", extent=(x0, x1, y1, y0), **kwargs)
        self.set_transform(ax.transData)  # now, not when added to the axes: the canvas is composed below
        self.boxes: list[Box] = [box for box, _ in tiles]  #: each tile's ``(x0, y0, width, height)``, inches
        self.tiles: list[np.ndarray] = [tile for _, tile in tiles]  #: each tile's pixels or values, as given
        self._opacity = 1.0 if alpha is None else float(alpha)  # in the pixels: the artist's own alpha stays None
        self._corners = np.array([[(x, y + h), (x + w, y)] for x, y, w, h in self.boxes]).reshape(-1, 2)
        self._drawn: tuple[tuple[int, ...], np.ndarray] | None = None  # (pixel boxes, canvas bottom row first)
        self.set_data(self._compose(self.get_transform())[1][::-1])

    def _render(self, tile: np.ndarray, rows: int, cols: int) -> np.ndarray:
        """``tile`` as ``(rows, cols, 4)`` ``uint8`` RGBA, row 0 on top."""
        if tile.ndim == 3:
            return tile.take(_nearest(rows, tile.shape[0]), 0).take(_nearest(cols, tile.shape[1]), 1)
        values = np.ma.filled(np.ma.masked_invalid(tile).astype(np.float32), np.nan)
        if self.get_interpolation() == "bilinear":
            values = _bilinear(values, rows, cols)
        else:
            values = values.take(_nearest(rows, values.shape[0]), 0).take(_nearest(cols, values.shape[1]), 1)
        rgba = self.to_rgba(values, bytes=True)  # NaN: the colour map's "bad" colour
        if self._opacity != 1.0:
            rgba[..., 3] = (rgba[..., 3] * np.float32(self._opacity)).astype(np.uint8)
        return rgba

    def _compose(self, transform: Any) -> tuple[tuple[int, ...], np.ndarray]:
        """(where, canvas): the canvas of the tiles on the pixels of ``transform`` (data -> pixels), bottom row
        first, and its placement with every tile's pixel box (the key to reuse it)."""
        x0, x1, y1, y0 = self.get_extent()
        (left, bottom), (right, top) = np.rint(transform.transform([(x0, y1), (x1, y0)])).astype(int)
        boxes = np.rint(transform.transform(self._corners)).astype(int).reshape(-1, 4) - (left, bottom, left, bottom)
        where = (left, bottom, right, top, *boxes.ravel().tolist())
        if self._drawn is not None and self._drawn[0] == where:
            return self._drawn
        canvas = np.zeros((max(top - bottom, 1), max(right - left, 1), 4), np.uint8)
        for (c0, r0, c1, r1), tile in zip(boxes, self.tiles):
            c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)
            canvas[r0:r1, c0:c1] = self._render(tile, r1 - r0, c1 - c0)[::-1]  # bottom row first
        self._drawn = (where, canvas)
        return self._drawn

    def make_image(self, renderer: Any, magnification: float = 1.0, unsampled: bool = False) -> Any:
        """The canvas on the renderer's pixels, its bottom-left corner, and no transform left to apply."""
        where, canvas = self._compose(self.get_transform() + Affine2D().scale(magnification))
        return canvas, where[0] / magnification, where[1] / magnification, IdentityTransform()


def _nearest(size: int, source: int) -> np.ndarray:
    """The source index of each of ``size`` pixels resized from ``source`` (nearest, by pixel centres)."""
    return (2 * np.arange(size) + 1) * source // (2 * size)


def _bilinear(values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``values`` resized to ``rows`` x ``cols`` by bilinear interpolation between pixel centres (edges held,
    as matplotlib's ``interpolation="bilinear"``); a pixel that draws on a NaN is NaN."""
    finite = np.isfinite(values)
    layers = [values] if finite.all() else [np.where(finite, values, np.float32(0.0)), finite.astype(np.float32)]
    for axis, size in ((0, rows), (1, cols)):
        source = values.shape[axis]
        at = np.clip((np.arange(size, dtype=np.float32) + 0.5) * (source / size) - 0.5, 0, source - 1)
        low = at.astype(int)  # at >= 0: floor
        high, frac = np.minimum(low + 1, source - 1), at - np.floor(at)
        frac = frac[:, None] if axis == 0 else frac[None, :]
        layers = [(lo := a.take(low, axis)) + (a.take(high, axis) - lo) * frac for a in layers]
    if len(layers) == 1:
        return layers[0]
    out, weight = layers
    return np.where(weight > 1 - 1e-4, out, np.float32(np.nan))
