"""render: overlay grids and frame strips as Agg figures, pixels and PNG bytes; denormalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib import _pylab_helpers
from matplotlib.figure import Figure

from lightning_xai.datasets import SyntheticShapes
from lightning_xai.render import (
    denormalize,
    figure_to_array,
    figure_to_png_bytes,
    frame_strip,
    infer_normalization,
    overlay_grid,
)
from tests.helpers import tile_axes
from tests.render._tiles import overlay_images, overlay_tiles

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalise(x: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def _images(n: int = 3, size: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n))


def _heatmaps(n: int = 3, size: int = 12) -> torch.Tensor:
    return torch.rand(n, size, size, generator=torch.Generator().manual_seed(10 + n))


# ---------------------------------------------------------------------------------------------- normalisation


def test_infer_normalization() -> None:
    assert infer_normalization(torch.rand(2, 3, 4, 4)) is None
    assert infer_normalization(torch.rand(2, 3, 4, 4) * 255) is None
    assert infer_normalization(_normalise(torch.rand(2, 3, 4, 4), IMAGENET_MEAN, IMAGENET_STD)) == (
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    grey_mean, grey_std = infer_normalization(torch.full((1, 1, 2, 2), -1.0))
    assert len(grey_mean) == len(grey_std) == 1
    assert infer_normalization(torch.zeros(1, 3, 2, 2, dtype=torch.uint8)) is None


def test_denormalize_round_trip_explicit_and_inferred() -> None:
    x = torch.rand(4, 3, 8, 8)
    normalised = _normalise(x, IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(denormalize(normalised, IMAGENET_MEAN, IMAGENET_STD), x)
    torch.testing.assert_close(denormalize(normalised), x)  # inferred: values reach below -0.1
    torch.testing.assert_close(denormalize(x), x)  # already in [0, 1]


def test_denormalize_round_trip_with_the_dataset_statistics() -> None:
    raw = torch.stack([SyntheticShapes(2, normalize=False)[i][0] for i in range(2)])
    normalised = torch.stack([SyntheticShapes(2)[i][0] for i in range(2)])
    torch.testing.assert_close(denormalize(normalised, SyntheticShapes.mean, SyntheticShapes.std), raw)


def test_denormalize_channels_scales_and_non_finite() -> None:
    grey = torch.rand(2, 1, 5, 5)
    out = denormalize(grey)
    assert out.shape == (2, 3, 5, 5) and torch.equal(out[:, 0], out[:, 2])
    many = torch.rand(2, 5, 5, 5)
    torch.testing.assert_close(denormalize(many), many[:, :3])
    as_bytes = (torch.rand(1, 3, 4, 4) * 255).to(torch.uint8)
    torch.testing.assert_close(denormalize(as_bytes), as_bytes.float() / 255)
    torch.testing.assert_close(denormalize(as_bytes.float()), as_bytes.float() / 255)
    broken = torch.rand(1, 3, 4, 4)
    broken[0, 0, 0, 0] = math.nan
    out = denormalize(broken)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    ("images", "kwargs", "error", "match"),
    [
        (torch.rand(3, 4, 4), {}, ValueError, "`images` to be a non-empty tensor of shape \\(B, C, H, W\\)"),
        (np.zeros((1, 3, 4, 4)), {}, TypeError, "`images`"),
        (torch.rand(1, 3, 4, 4), {"mean": (0.1, 0.2)}, ValueError, "`mean`"),
        (torch.rand(1, 3, 4, 4), {"std": "abc"}, TypeError, "`std`"),
    ],
)
def test_denormalize_errors(images, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        denormalize(images, **kwargs)


# ---------------------------------------------------------------------------------------------- overlay grid


def test_overlay_grid_returns_an_agg_figure_without_pyplot() -> None:
    managers = _pylab_helpers.Gcf.get_num_fig_managers()
    fig = overlay_grid(
        _images(3),
        _heatmaps(3),
        titles=["true: circle | pred: circle (0.97)"] * 3,
        suptitle="Grad-CAM++ · epoch 3 · step 120",
    )
    assert isinstance(fig, Figure)
    assert _pylab_helpers.Gcf.get_num_fig_managers() == managers  # nothing registered with pyplot
    assert len(overlay_tiles(fig)) == 3 and len(fig.axes) == 2  # the tiles in one axes, the colour bar
    assert fig.get_suptitle() == "Grad-CAM++ · epoch 3 · step 120"
    colorbar_labels = [ax.get_ylabel() for ax in fig.axes if not ax.get_images()]
    assert colorbar_labels == ["attribution (normalised)"]


def test_figure_to_array_and_png_bytes() -> None:
    fig = overlay_grid(_images(2), _heatmaps(2))
    array = figure_to_array(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert array.dtype == np.uint8 and array.shape == (round(height), round(width), 3)
    assert array.std() > 0  # something was drawn
    png = figure_to_png_bytes(fig, dpi=50)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png == figure_to_png_bytes(fig, dpi=50)  # deterministic bytes
    with pytest.raises(TypeError, match="`fig`"):
        figure_to_array(array)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`dpi`"):
        figure_to_png_bytes(fig, dpi=0)


def test_grid_shape_follows_ncols_and_tiles_scale_with_count() -> None:
    few = overlay_grid(_images(2), _heatmaps(2), ncols=4)
    many = overlay_grid(_images(10), _heatmaps(10), ncols=4)
    boxes = overlay_images(many)[1].boxes  # (x0, y0, width, height) of each heatmap, inches
    assert len(boxes) == 10
    columns = {round(x, 3) for x, _, _, _ in boxes}
    rows = {round(y, 3) for _, y, _, _ in boxes}
    assert (len(columns), len(rows)) == (4, 3)
    assert many.get_size_inches()[1] > few.get_size_inches()[1]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_heatmaps_are_transparent_not_fatal(bad: float) -> None:
    heatmaps = _heatmaps(3)
    heatmaps[0, :4] = bad
    heatmaps[1] = bad  # a whole map
    fig = overlay_grid(_images(3), heatmaps)
    array = figure_to_array(fig)
    assert array.shape[-1] == 3
    overlay = overlay_tiles(fig)[0][1]
    assert np.ma.is_masked(overlay) and overlay.mask[:4].all() and not overlay.mask[4:].any()


def test_heatmaps_of_another_size_and_with_channel_dim() -> None:
    fig = overlay_grid(_images(2, size=16), _heatmaps(2, size=4).unsqueeze(1))
    overlay = overlay_tiles(fig)[0][1]
    assert overlay.shape == (16, 16)


def test_grey_and_four_channel_images() -> None:
    figure_to_array(overlay_grid(torch.rand(2, 1, 8, 8), _heatmaps(2, size=8)))
    figure_to_array(overlay_grid(torch.rand(2, 4, 8, 8), _heatmaps(2, size=8)))


def test_titles_do_not_overlap() -> None:
    titles = [f"true: triangle | pred: circle ({p:.2f}) with a long note" for p in np.linspace(0, 1, 6)]
    fig = overlay_grid(_images(6), _heatmaps(6), titles=titles, suptitle="LayerCAM · epoch 12 · step 4800")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    texts = [*fig.axes[0].texts, fig._suptitle]  # the tiles' titles (texts of the tiles' axes), the figure's
    assert len(texts) == 7
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        assert a.x0 >= 0 and a.x1 <= fig.bbox.width + 1  # inside the figure
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    assert all(t.get_fontsize() >= 8 for t in texts)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"heatmaps": torch.rand(2, 8, 8)}, ValueError, "`heatmaps`"),
        ({"heatmaps": torch.rand(3, 2, 8, 8)}, ValueError, "`heatmaps`"),
        ({"titles": ["a"]}, ValueError, "`titles` to be a sequence of 3 strings"),
        ({"titles": "abc"}, TypeError, "`titles`"),
        ({"ncols": 0}, ValueError, "`ncols`"),
        ({"alpha": 1.5}, ValueError, "`alpha`"),
        ({"cmap": "no-such-map"}, ValueError, "`cmap`"),
    ],
)
def test_overlay_grid_errors(kwargs: dict, error: type, match: str) -> None:
    args = {"images": _images(3, size=8), "heatmaps": _heatmaps(3, size=8), **kwargs}
    with pytest.raises(error, match=match):
        overlay_grid(**args)


# ---------------------------------------------------------------------------------------------- frame strip


@pytest.mark.parametrize("time_dim", [1, 2])
def test_frame_strip_layout(time_dim: int) -> None:
    batch, steps = 2, 5
    clips = torch.rand(batch, steps, 3, 8, 8)
    if time_dim == 2:
        clips = clips.transpose(1, 2)
    heatmaps = torch.rand(batch, steps, 8, 8)
    heatmaps[1, 2] = math.nan
    fig = frame_strip(clips, heatmaps, titles=["clip a", "clip b"], suptitle="video", time_dim=time_dim)
    tiles = tile_axes(fig)
    assert len(tiles) == batch * steps
    columns = {round(ax.get_position().x0, 3) for ax in tiles}
    rows = {round(ax.get_position().y0, 3) for ax in tiles}
    assert (len(columns), len(rows)) == (steps, batch)
    assert [ax.get_title() for ax in tiles[:steps]] == [f"frame {t}" for t in range(steps)]
    assert [tiles[b * steps].get_ylabel() for b in range(batch)] == ["clip a", "clip b"]
    assert figure_to_array(fig).dtype == np.uint8


def test_frame_strip_undoes_normalisation() -> None:
    frames = torch.rand(1, 2, 3, 6, 6)
    normalised = _normalise(frames.flatten(0, 1), IMAGENET_MEAN, IMAGENET_STD).view_as(frames)
    fig = frame_strip(normalised, torch.zeros(1, 2, 6, 6))
    shown = tile_axes(fig)[1].get_images()[0].get_array()
    np.testing.assert_allclose(shown, frames[0, 1].permute(1, 2, 0).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("clips", "heatmaps", "kwargs", "match"),
    [
        (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), {}, "`clips`"),
        (torch.rand(2, 3, 3, 8, 8), torch.rand(2, 4, 8, 8), {}, "`heatmaps`"),
        (torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 8, 8), {"time_dim": 3}, "`time_dim`"),
        (torch.rand(2, 3, 3, 8, 8), torch.rand(2, 3, 8, 8), {"titles": ["a", "b", "c"]}, "`titles`"),
    ],
)
def test_frame_strip_errors(clips: torch.Tensor, heatmaps: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        frame_strip(clips, heatmaps, **kwargs)


def test_overlay_grid_axis_labels_draw_rows_upwards_with_labelled_axes():
    """Spectrograms (Grad-CAM of audio models): frequency up and labelled, like the SHAP spectrogram plot."""
    images, heatmaps = torch.rand(2, 1, 8, 12), torch.rand(2, 8, 12)
    fig = overlay_grid(images, heatmaps, axis_labels=("time frame", "frequency bin"))
    tile = fig.axes[0]
    assert (tile.get_xlabel(), tile.get_ylabel()) == ("time frame", "frequency bin")
    bottom, top = tile.get_ylim()
    assert bottom < top  # row 0 at the bottom
    photo = overlay_grid(images, heatmaps).axes[0]
    assert photo.get_ylim()[0] > photo.get_ylim()[1] and photo.get_xlabel() == ""
    assert {image.origin for image in photo.get_images()} == {"upper"}  # row 0 on top
    with pytest.raises(TypeError, match="axis_labels"):
        overlay_grid(images, heatmaps, axis_labels=("time",))


@pytest.mark.parametrize("shape", [(1, 1, 4), (7, 5, 4), (64, 33, 3), (40, 300, 4)])
def test_encode_png_reads_back_exactly(shape: tuple[int, int, int]) -> None:
    import io

    from PIL import Image

    from lightning_xai.render._utils import encode_png

    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels[: shape[0] // 2] = pixels[0]  # runs of equal rows (the "Up" filter's zero rows) and noise
    if shape[-1] == 4 and shape[0] > 1:
        pixels[..., 3] = 255
        pixels[-1, -1, 3] = 7  # one translucent pixel: stays RGBA
    image = Image.open(io.BytesIO(encode_png(pixels, dpi=72)))
    image.load()  # checks every chunk's CRC and the zlib stream
    opaque = shape[-1] == 3 or bool((pixels[..., 3] == 255).all())
    assert image.mode == ("RGB" if opaque else "RGBA")
    expected = pixels[..., :3] if opaque else pixels
    np.testing.assert_array_equal(np.asarray(image), expected)
    assert tuple(round(d) for d in image.info["dpi"]) == (72, 72)


def test_encode_png_refuses_what_is_not_8_bit_rgb_or_rgba() -> None:
    from lightning_xai.render._utils import encode_png

    with pytest.raises(ValueError, match="`pixels`"):
        encode_png(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="`pixels`"):
        encode_png(np.zeros((4, 4, 3), np.float32))
