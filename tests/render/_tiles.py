"""What the tile grids drawn in one axes (render/_mosaic.py) show: their tiles, read back from the artists."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.transforms import Bbox

from lightning_xai.render._mosaic import TileImage


def overlay_images(fig: Any) -> tuple[TileImage, TileImage]:
    """The two images of an overlay grid of photos (one axes): the photos composed, the heatmaps over them, each
    tile of one on the same box as in the other."""
    photos, heatmaps = fig.axes[0].get_images()
    assert isinstance(photos, TileImage) and isinstance(heatmaps, TileImage)
    assert photos.boxes == heatmaps.boxes  # each heatmap over its photo
    return photos, heatmaps


def overlay_tiles(fig: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(photo RGBA pixels, heatmap values)`` of each tile of an overlay grid of photos, row by row."""
    photos, heatmaps = overlay_images(fig)
    return list(zip(photos.tiles, heatmaps.tiles))


def tile_boxes(fig: Any, renderer: Any = None) -> list[Bbox]:
    """Every tile of the figure's image axes in display pixels: one box per tile, however many images draw on it
    (a heatmap over its photo); two tiles of one TileImage on one box stay two (a layout error)."""
    tiles: list[Bbox] = []
    for ax in fig.axes:
        for image in ax.get_images():
            if isinstance(image, TileImage):  # y downwards in its data: sorted, x0 < x1 and y0 < y1 on screen
                boxes = [Bbox(np.sort(ax.transData.transform([(x, y), (x + w, y + h)]), axis=0))
                         for x, y, w, h in image.boxes]
            else:
                boxes = [image.get_window_extent(renderer)]
            seen = {_key(box) for box in tiles}
            tiles += [box for box in boxes if _key(box) not in seen]
    return tiles


def _key(box: Bbox) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in box.extents)
