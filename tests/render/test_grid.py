"""The manual layout of the tile and panel grids (render/_grid.py, render/_mosaic.py): every text inside the
figure, no text over another axes or over a tile, no two axes and no two tiles overlapping, and literal strings
through draw_png."""

from __future__ import annotations

import io
from itertools import combinations

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

from lightning_xai.render import draw_png, overlay_grid
from lightning_xai.render._mosaic import TileImage
from lightning_xai.render._utils import figure_to_png_bytes
from lightning_xai.render.drift import drift_timeline, snapshot_grid
from lightning_xai.render.shap import signed_heatmap_grid
from tests.render._tiles import overlay_images, overlay_tiles, tile_boxes


def _overlap(a, b) -> bool:
    """Two display boxes share more than a pixel in both directions."""
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 1 and min(a.y1, b.y1) - max(a.y0, b.y0) > 1


def _drawn(fig):
    figure_to_png_bytes(fig)  # draws it at dpi 100
    return fig.canvas.get_renderer()


def _check_layout(fig):
    renderer = _drawn(fig)
    width, height = fig.bbox.width, fig.bbox.height
    boxes = {ax: ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()}
    for a, b in combinations(boxes, 2):
        assert not _overlap(boxes[a], boxes[b]), "two axes overlap"
    tiles = tile_boxes(fig, renderer)  # the tiles drawn in one axes: each one as an axes of its own was
    for a, b in combinations(tiles, 2):
        assert not _overlap(a, b), "two tiles overlap"
    for tile in tiles:
        for ax, ab in boxes.items():
            if tile.x0 < ab.x0 - 1 or tile.x1 > ab.x1 + 1 or tile.y0 < ab.y0 - 1 or tile.y1 > ab.y1 + 1:
                assert not _overlap(tile, ab), "a tile overlaps another axes"
    texts = [t for t in fig.get_children() if isinstance(t, Text)]  # the figure's own: its title
    texts += [t for legend in fig.legends for t in legend.get_texts()]  # figure legends (drift timeline)
    for ax in boxes:
        if not ax.axison:
            texts += [ax.title, *ax.texts]
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts, ax.xaxis.get_offset_text(),
                  ax.yaxis.get_offset_text()]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            low, high = min(low, high), max(low, high)
            texts += [t.label1 for t in axis.get_major_ticks() if low - 1e-9 <= t.get_loc() <= high + 1e-9]
    texts = [t for t in texts if t.get_visible() and t.get_text()]
    checked = 0
    for text in texts:
        box = text.get_window_extent(renderer)
        if box.width == 0:
            continue
        checked += 1
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= width + 1 and box.y1 <= height + 1, \
            f"{text.get_text()!r} leaves the figure: {box} in {width}x{height}"
        for ax, ab in boxes.items():
            if ax is text.axes or text.axes is not None and ax is not text.axes and text in ax.texts:
                continue
            assert not _overlap(box, ab), f"{text.get_text()!r} is drawn over another axes"
        for tile in tiles:
            assert not _overlap(box, tile), f"{text.get_text()!r} is drawn over a tile"
    assert checked > 0


@pytest.mark.parametrize("count", [1, 3, 8, 17])
def test_overlay_grid_places_tiles_titles_and_bar_without_overlap(count):
    titles = [f"#{i} | true: a rather long class name {i} | pred: another long one (0.{i:02d})" for i in range(count)]
    fig = overlay_grid(torch.rand(count, 3, 16, 24), torch.rand(count, 16, 24), titles=titles,
                       suptitle="Grad-CAM · layer features.9 · fit · epoch 12 · step 3400")
    _check_layout(fig)
    tiles = overlay_tiles(fig)
    assert len(tiles) == count and len(fig.axes) == 2  # the tiles' axes and the colour bar's
    ratios = {round(w / h, 2) for _, _, w, h in overlay_images(fig)[1].boxes}  # the photos' are the same
    assert ratios == {1.5}  # the images' aspect, 24 / 16
    texts = [t.get_text() for t in fig.axes[0].texts]  # one title per tile, wrapped, in the tiles' order
    assert len(texts) == count and all(text.startswith(f"#{i}\n") for i, text in enumerate(texts))


def test_signed_grid_with_tiny_values_keeps_the_bar_ticks_inside():
    fig = signed_heatmap_grid(torch.rand(4, 3, 8, 8), torch.randn(4, 8, 8) * 1e-6, titles=list("abcd"),
                              suptitle="SHAP")
    _check_layout(fig)


def test_snapshot_grid_row_labels_and_columns():
    fig = snapshot_grid(torch.rand(5, 3, 8, 8), [f"probe #{i}" for i in range(5)], ["epoch 0", "epoch 1", "ref"],
                        suptitle="gradcam across snapshots · run $x_1_2$", images=torch.rand(5, 3, 8, 8))
    _check_layout(fig)
    assert len(tile_boxes(fig)) == 5 * 4  # the probe images and 3 snapshots, each probe a row
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {"input", "epoch 0", "epoch 1", "ref", *(f"probe #{i}" for i in range(5))}
    assert len(fig.axes[0].collections[0].get_segments()) == 20  # a frame round each tile


def test_overlay_grid_of_large_images_draws_each_heatmap_by_matplotlib():
    """A map shown less than 3 times enlarged: matplotlib colours it before it interpolates (or filters it as it
    shrinks), which the composed image does not copy; each heatmap is then an imshow of its own, in place."""
    heatmaps = torch.rand(3, 128, 128)
    heatmaps[0, :8] = float("nan")
    fig = overlay_grid(torch.rand(3, 3, 128, 128), heatmaps, titles=list("abc"), suptitle="large")
    _check_layout(fig)
    photos, *maps = fig.axes[0].get_images()
    assert isinstance(photos, TileImage) and len(photos.tiles) == len(maps) == 3 and len(fig.axes) == 2
    assert not any(isinstance(m, TileImage) for m in maps) and {m.get_interpolation() for m in maps} == {"bilinear"}
    for (x, y, w, h), heatmap in zip(photos.boxes, maps):
        assert np.allclose(heatmap.get_extent(), (x, x + w, y + h, y))  # each over its photo
    assert maps[0].get_array().mask[:8].all() and {m.get_clim() for m in maps} == {(0.0, 1.0)}


def test_snapshot_grid_with_large_probe_images_draws_them_by_matplotlib():
    """Probe images that shrink keep imshow's antialiasing (an image each); the maps stay one composed image."""
    fig = snapshot_grid(torch.rand(2, 2, 8, 8), ["#0", "#1"], ["e0", "e1"], images=torch.rand(2, 3, 256, 256))
    _check_layout(fig)
    maps, *pictures = fig.axes[0].get_images()
    assert isinstance(maps, TileImage) and len(maps.tiles) == 4
    assert len(pictures) == 2 and not any(isinstance(p, TileImage) for p in pictures)
    assert len(fig.axes[0].collections[0].get_segments()) == 6  # a frame round each tile


@pytest.mark.parametrize("metrics", [1, 4, 6])
def test_drift_timeline_panels_do_not_collide(metrics):
    names = ["spearman", "ndcg", "topk_iou", "cosine", "com_shift", "focus_radius_change"][:metrics]
    series = {m: {"previous": [(e, 1000.0 * e if m == "com_shift" else 0.5 + e / 40) for e in range(1, 12)],
                  "first": [(e, 0.9 - e / 50) for e in range(1, 12)]} for m in names}
    _check_layout(drift_timeline(series, title="gradcam attribution drift · run bench", alert_below=0.5))


def test_draw_png_draws_dollar_strings_literally():
    def builder():
        fig = overlay_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), titles=["$x_1_2$", "a\\b $$"],
                           suptitle="$\\alpha$ run")
        fig.axes[0].text(0, 0, "$x_1_2$")
        return fig

    png = draw_png(builder, dpi=50)  # mathtext would raise on the double subscript
    assert np.asarray(Image.open(io.BytesIO(png))).ndim == 3


@pytest.mark.parametrize("subtitle", [None, "multiclass · 128 predictions · fit · epoch 12 · step 3400"])
def test_reliability_diagram_panels_do_not_collide(subtitle):
    from lightning_xai.render.calibration import reliability_diagram

    counts = [0, 2, 5, 9, 14, 20, 25, 18, 22, 13000]  # a wide count label on the histogram's y axis
    conf = [float("nan"), 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]
    acc = [float("nan"), 0.0, 0.2, 0.33, 0.5, 0.5, 0.6, 0.8, 0.9, 1.0]
    fig = reliability_diagram(counts, conf, acc, 0.0412, title="Reliability diagram $x_1$", subtitle=subtitle)
    _check_layout(fig)
    diagram, hist = fig.axes
    assert diagram.get_position().x0 == hist.get_position().x0  # one left edge: the bins line up
    assert diagram.get_position().width == hist.get_position().width
    assert diagram.get_position().height == pytest.approx(3 * hist.get_position().height)
