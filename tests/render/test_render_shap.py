"""render.shap / render.shap_text: signed attributions on images, clips, spectrograms and text; shares."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from matplotlib import _pylab_helpers
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from lightning_xai.datasets import SyntheticShapes
from lightning_xai.render import (
    figure_to_array,
    frame_strip,
    modality_shares,
    overlay_grid,
    signed_frame_strip,
    signed_heatmap_grid,
    spectrogram_plot,
    token_grid,
    token_plot,
)
from tests.helpers import tile_axes
from tests.render._tiles import overlay_images, overlay_tiles

SHAP_LABEL = "SHAP value (→ class)"
SPECIAL = ("[CLS]", "[SEP]", "[PAD]")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _colorbar_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def _sentence(words: str, seed: int = 0) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    tokens = ["[CLS]", *words.split(), "[SEP]", "[PAD]", "[PAD]"]
    values = torch.randn(len(tokens), generator=_gen(seed))
    mask = torch.tensor([t not in SPECIAL for t in tokens])
    return tokens, values, mask


# ---------------------------------------------------------------------------------------------- images


def test_signed_heatmap_grid_symmetric_range_grey_background_and_one_bar() -> None:
    ds = SyntheticShapes(num_samples=4, image_size=16)
    images, _, masks = map(torch.stack, zip(*[ds[i] for i in range(4)]))
    values = masks - 0.5 + 0.1 * torch.randn(4, 16, 16, generator=_gen(0))
    values[0, 0, 0] = 1000.0  # one outlier must not set the range
    managers = _pylab_helpers.Gcf.get_num_fig_managers()
    fig = signed_heatmap_grid(images, values, titles=list("abcd"), suptitle="SHAP", mean=ds.mean, std=ds.std)
    assert isinstance(fig, Figure) and _pylab_helpers.Gcf.get_num_fig_managers() == managers
    tiles = overlay_tiles(fig)
    assert len(tiles) == 4 and len(fig.axes) == 2  # the tiles in one axes, the colour bar
    low, high = overlay_images(fig)[1].get_clim()  # one image: one range shared by every tile
    assert low == -high and high == pytest.approx(np.percentile(values.abs().numpy(), 99), rel=1e-6)
    background = tiles[0][0]
    np.testing.assert_allclose(background[..., 0], background[..., 2])  # greyscale
    bar = _colorbar_axes(fig)[0]._colorbar
    assert bar.norm.vmin == -bar.norm.vmax and bar.ax.get_ylabel() == SHAP_LABEL
    assert bar.extend != "neither"  # the outlier is clipped, and the bar says so
    assert fig.get_suptitle() == "SHAP"


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_signed_heatmap_grid_non_finite_values_are_transparent(bad: float) -> None:
    values = torch.randn(2, 8, 8, generator=_gen(1))
    values[0, :3] = bad
    values[1] = bad  # a whole map
    fig = signed_heatmap_grid(torch.rand(2, 3, 8, 8, generator=_gen(2)), values.unsqueeze(1))
    overlay = overlay_tiles(fig)[0][1]
    assert overlay.mask[:3].all() and not overlay.mask[3:].any()
    low, high = overlay_images(fig)[1].get_clim()
    assert math.isfinite(high) and low == -high
    assert figure_to_array(fig).std() > 0


def test_overlay_grid_and_frame_strip_take_a_range_and_keep_their_defaults() -> None:
    default = overlay_grid(torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8))
    assert overlay_images(default)[1].get_clim() == (0.0, 1.0)
    assert _colorbar_axes(default)[0]._colorbar.extend == "neither"
    clips, maps = torch.rand(1, 2, 3, 8, 8), torch.randn(1, 2, 8, 8) * 3
    fig = frame_strip(clips, maps, vmin=-2, vmax=2, colorbar_label="x")
    assert tile_axes(fig)[0].get_images()[1].get_clim() == (-2.0, 2.0)
    assert _colorbar_axes(fig)[0].get_ylabel() == "x"
    with pytest.raises(ValueError, match="`vmax`"):
        overlay_grid(torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), vmin=1.0, vmax=1.0)
    with pytest.raises(TypeError, match="`vmin`"):
        frame_strip(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 8, 8), vmin=math.nan)


def test_signed_frame_strip_eight_frames() -> None:
    clips = torch.rand(2, 8, 3, 12, 12, generator=_gen(3))
    values = torch.randn(2, 8, 12, 12, generator=_gen(4))
    values[1, 3] = math.nan
    fig = signed_frame_strip(clips, values, titles=["clip a", "clip b"], suptitle="video")
    tiles = tile_axes(fig)
    assert len(tiles) == 16 and len(_colorbar_axes(fig)) == 1
    assert {tile.get_images()[1].get_clim() for tile in tiles} == {tiles[0].get_images()[1].get_clim()}
    low, high = tiles[0].get_images()[1].get_clim()
    assert low == -high
    assert [tiles[0].get_ylabel(), tiles[8].get_ylabel()] == ["clip a", "clip b"]
    fig = signed_frame_strip(clips.transpose(1, 2), values, time_dim=2)
    assert len(tile_axes(fig)) == 16


# ---------------------------------------------------------------------------------------------- text


def test_token_plot_panels_masked_tokens_and_word_pieces() -> None:
    tokens = ["[CLS]", "the", "movie", "was", "absolute", "##ly", "wonder", "##ful", "[SEP]", "[PAD]"]
    values = torch.tensor([0.9, 0.01, 0.05, -0.3, 0.2, 0.1, 0.5, 0.3, -0.8, 0.0])
    mask = torch.tensor([t not in SPECIAL for t in tokens])
    fig = token_plot(tokens, values, title="true: positive | pred: positive (0.98)", top_k=3, mask=mask)
    bars, sentence, colorbar = fig.axes
    assert len(fig.axes) == 3 and hasattr(colorbar, "_colorbar")
    texts = _texts(fig)
    assert not any(special in text for text in texts for special in SPECIAL)
    shown = ["the", "movie", "was", "absolute", "ly", "wonder", "ful"]
    assert [t.get_text() for t in sentence.texts] == shown
    labels = ["wonder (wonderful)", "was", "##ful (wonderful)"]
    assert [label.get_text() for label in bars.get_yticklabels()] == labels
    widths = [patch.get_width() for patch in bars.patches]
    colours = [patch.get_facecolor() for patch in bars.patches]
    assert widths == pytest.approx([0.5, -0.3, 0.3])
    assert colours[0][0] > colours[0][2] and colours[1][2] > colours[1][0]  # red positive, blue negative
    norm = colorbar._colorbar.norm
    assert norm.vmin == -norm.vmax  # symmetric
    assert 0.0 < norm.vmax <= 0.5  # the masked 0.9 and -0.8 do not enter it
    assert colorbar.get_xlabel() == SHAP_LABEL
    assert fig.get_suptitle() == "true: positive | pred: positive (0.98)"


def test_token_plot_text_does_not_overlap_and_128_tokens_fit() -> None:
    words = " ".join(f"w{i}" + (" ##ing" if i % 7 == 0 else "") for i in range(110))
    tokens, values, mask = _sentence(words)
    tokens, values, mask = tokens[:128], values[:128], mask[:128]
    values[5] = math.nan
    fig = token_plot(tokens, values, title="long", top_k=12, mask=mask)
    bars, sentence, _ = fig.axes
    assert len(bars.patches) == 12
    boxes = [p for p in sentence.patches if isinstance(p, Rectangle)]
    assert len(boxes) == int(mask.sum())
    width = sentence.get_xlim()[1]
    lines: dict[float, list[tuple[float, float]]] = {}
    for box in boxes:
        assert box.get_x() >= 0 and box.get_x() + box.get_width() <= width + 1e-9
        lines.setdefault(round(box.get_y(), 6), []).append((box.get_x(), box.get_x() + box.get_width()))
    assert len(lines) > 3  # wrapped
    for spans in lines.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert all(t.get_fontsize() >= 8 for t in fig.findobj(Text) if t.get_text())
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    headings = [fig._suptitle, bars.title, bars.xaxis.label, sentence._left_title, fig.axes[2].xaxis.label]
    extents = [t.get_window_extent(renderer) for t in headings]
    for i, a in enumerate(extents):
        for b in extents[i + 1 :]:
            assert not a.overlaps(b)
    assert figure_to_array(fig).shape[1] == 800


def test_token_plot_sentencepiece_nan_and_empty() -> None:
    fig = token_plot(["▁un", "believ", "able", "▁film"], [0.2, math.nan, -0.1, 0.4], top_k=10)
    sentence = fig.axes[1]
    assert [t.get_text() for t in sentence.texts] == ["un", "believ", "able", "film"]
    assert len(fig.axes[0].patches) == 3  # the NaN token is not ranked
    fig = token_plot(["[PAD]"], torch.zeros(1), mask=torch.zeros(1, dtype=torch.bool))
    assert "[PAD]" not in _texts(fig)


def test_token_grid_rows_shared_range_and_top_tokens_in_titles() -> None:
    samples = [
        (*_sentence("the movie was wonder ##ful", seed=i), f"sample {i}") for i in range(3)
    ]
    samples.append((["not", "bad"], torch.tensor([math.nan, -2.0]), None, None))
    fig = token_grid(samples, suptitle="epoch 3", top_k=2)
    rows, colorbar = fig.axes[:-1], fig.axes[-1]
    assert len(rows) == 4 and hasattr(colorbar, "_colorbar")
    norm = colorbar._colorbar.norm
    assert norm.vmin == -norm.vmax
    everything = torch.cat([s[1][s[2]] for s in samples[:3]] + [torch.tensor([-2.0])])
    assert norm.vmax == pytest.approx(np.percentile(everything.abs().numpy(), 99))
    heading = rows[0].get_title(loc="left")
    tokens, values, mask = samples[0][:3]
    top = sorted(zip(tokens, values.tolist(), mask.tolist()), key=lambda t: -abs(t[1]) * t[2])
    assert heading.startswith("sample 0 — top: ") and top[0][0] in heading and top[1][0] in heading
    assert rows[3].get_title(loc="left") == "top: bad -2"
    assert not any(special in text for text in _texts(fig) for special in SPECIAL)
    assert fig.get_suptitle() == "epoch 3"


# ---------------------------------------------------------------------------------------------- audio


def test_spectrogram_plot_panels_marginals_and_units() -> None:
    spectrograms = torch.rand(3, 1, 16, 24, generator=_gen(5))
    values = torch.randn(3, 1, 16, 24, generator=_gen(6))
    values[2, 0, :, :4] = math.nan
    fig = spectrogram_plot(spectrograms, values, titles=["a", "b", "c"], sample_rate=16000, hop_length=160)
    assert len(fig.axes) == 3 * 3 + 1
    heatmaps = tile_axes(fig)
    assert len(heatmaps) == 3
    heat = heatmaps[0]
    assert heat.get_xlabel() == "time (s)" and heat.get_ylabel() == "frequency (Hz)"
    assert heat.get_images()[0].origin == "lower"
    assert heat.get_xlim()[1] == pytest.approx(23.5 * 160 / 16000)
    assert heat.get_ylim()[1] == pytest.approx(15.5 * 8000 / 15)
    low, high = heat.get_images()[1].get_clim()
    assert low == -high
    time_marginal = fig.axes[1]
    heights = [p.get_height() for p in time_marginal.patches]
    np.testing.assert_allclose(heights, values[0, 0].sum(0), rtol=1e-5)
    assert _colorbar_axes(fig)[0].get_ylabel() == SHAP_LABEL
    frames = spectrogram_plot(spectrograms[:1, 0], values[:1, 0], frequency_axis="bins", sample_rate=8000)
    assert (frames.axes[0].get_xlabel(), frames.axes[0].get_ylabel()) == ("time frame", "frequency bin")
    assert figure_to_array(frames).std() > 0


# ---------------------------------------------------------------------------------------------- shares


def test_modality_shares_percentages_and_legend() -> None:
    shares = torch.tensor([[3.0, 1.0], [0.0, 0.0], [math.nan, 2.0]])
    fig = modality_shares(shares, ["pixel_values", "input_ids"], title="shares", labels=["x", "y", "z"])
    (ax,) = fig.axes
    widths = np.array([p.get_width() for p in ax.patches]).reshape(2, 3)
    np.testing.assert_allclose(widths[:, 0], [75.0, 25.0])
    np.testing.assert_allclose(widths[:, 2], [0.0, 100.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["pixel_values", "input_ids"]
    assert {"75%", "25%", "100%", "no attribution"} <= set(_texts(fig))
    assert [label.get_text() for label in ax.get_yticklabels()] == ["x", "y", "z"]
    assert len(modality_shares(torch.tensor([1.0, 1.0]), ["a", "b"]).axes[0].patches) == 2


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: signed_heatmap_grid(torch.rand(2, 3, 8, 8), torch.rand(3, 8, 8)), ValueError, "`values`"),
        (lambda: signed_heatmap_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)), ValueError, "`values`"),
        (lambda: signed_heatmap_grid(torch.rand(2, 3, 8, 8), np.zeros((2, 8, 8))), TypeError, "`values`"),
        (lambda: signed_heatmap_grid(torch.rand(3, 8, 8), torch.rand(3, 8, 8)), ValueError, "`images`"),
        (lambda: signed_frame_strip(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)), ValueError, "`clips`"),
        (lambda: signed_frame_strip(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 3, 8, 8)), ValueError,
         "`values`"),
        (lambda: spectrogram_plot(torch.rand(2, 8), torch.rand(2, 8)), ValueError, "`spectrograms`"),
        (lambda: spectrogram_plot(torch.rand(2, 8, 9), torch.rand(2, 8, 8)), ValueError, "`values`"),
        (lambda: spectrogram_plot(torch.rand(1, 8, 9), torch.rand(1, 8, 9), sample_rate=-1), ValueError,
         "`sample_rate`"),
        (lambda: spectrogram_plot(torch.rand(1, 8, 9), torch.rand(1, 8, 9), frequency_axis="mel"), ValueError,
         "`frequency_axis`"),
        (lambda: token_plot(["a", "b"], torch.rand(3)), ValueError, "`values`"),
        (lambda: token_plot(["a", "b"], torch.rand(2, 1)), ValueError, "`values`"),
        (lambda: token_plot(["a", "b"], torch.rand(2), mask=[True]), ValueError, "`mask`"),
        (lambda: token_plot("a b", torch.rand(3)), TypeError, "`tokens`"),
        (lambda: token_plot(["a"], torch.rand(1), top_k=0), ValueError, "`top_k`"),
        (lambda: token_grid([]), ValueError, "`samples`"),
        (lambda: token_grid("abc"), TypeError, "`samples`"),
        (lambda: token_grid([("a",)]), TypeError, "`samples\\[0\\]`"),
        (lambda: token_grid([(["a"], [1.0]), (["a"], [1.0, 2.0])]), ValueError, "`samples\\[1\\].values`"),
        (lambda: modality_shares(torch.rand(2, 2, 2), ["a", "b"]), ValueError, "`shares`"),
        (lambda: modality_shares(-torch.rand(2, 2), ["a", "b"]), ValueError, "`shares`"),
        (lambda: modality_shares(torch.rand(2, 2), ["a"]), ValueError, "`names`"),
    ],
)
def test_wrong_inputs_name_the_argument(call: Callable[[], object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call()
