"""One figure per explained input, by its kind, for any :class:`~lightning_xai.explainers.Explanation`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lightning_xai.explainers import Explanation

__all__ = ["explanation_figure"]


def explanation_figure(expl: Explanation, name: str, values: Tensor, titles: list[str], suptitle: str,
                       mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       label: str | None = None) -> Any:
    """The figure of one input's ``values`` by its kind: token plot, heatmap grid (signed, or a heat overlay for
    unsigned methods such as Grad-CAM and saliency), frame strip, spectrogram (``None`` for tabular rows). Values
    shaped like the input (SHAP, gradients) are summed over channels; one value per position (Grad-CAM) is drawn as
    it is. ``label`` names the colour bar (default: the renderer's own, "SHAP value" for signed ones)."""
    from lightning_xai.render import (
        frame_strip,
        overlay_grid,
        signed_frame_strip,
        signed_heatmap_grid,
        spectrogram_plot,
        token_grid,
    )

    kw: dict[str, Any] = {} if label is None else {"colorbar_label": label}
    x, kind = expl.inputs[name], expl.kinds[name]
    if kind == "tokens":
        tokens, keep = expl.tokens[name], expl.keep[name]
        return token_grid([(tokens[i], values[i], keep[i], titles[i]) for i in range(x.shape[0])], suptitle=suptitle,
                          **kw)
    if kind == "image":
        per_pixel = values.sum(1) if values.dim() == 4 else values
        per_pixel = per_pixel if expl.signed else _relative(per_pixel)
        draw = signed_heatmap_grid if expl.signed else overlay_grid
        return draw(x, per_pixel, titles=titles, suptitle=suptitle, mean=mean, std=std, **kw)
    if kind == "video":
        channel_dim = 1 if expl.layouts.get(name) == "BCTHW" else 2
        clips = x if channel_dim == 2 else x.transpose(1, 2)
        per_pixel = values.sum(channel_dim) if values.dim() == 5 else values
        per_pixel = per_pixel if expl.signed else _relative(per_pixel)
        draw = signed_frame_strip if expl.signed else frame_strip
        return draw(clips, per_pixel, titles=titles, suptitle=suptitle, mean=mean, std=std, **kw)
    if kind == "spectrogram":  # drawn (mel, frames): frequency up, time right, whatever the model's layout
        x, values = (x.transpose(-1, -2), values.transpose(-1, -2)) if name in expl.time_first else (x, values)
        return spectrogram_plot(x, values, titles=titles, suptitle=suptitle, frequency_axis="bins", **kw)
    return None


def _relative(maps: Tensor) -> Tensor:
    """Unsigned maps over the heat colour scale [0, 1]: each probe's map divided by its own largest value (saliency
    gradients, attention rollout and the like are not in [0, 1]; drawn as they are they all clip to the bottom
    colour). A Grad-CAM map, already scaled so, is unchanged; an all-zero map stays zero."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12)
    return maps / peak.view(-1, *([1] * (maps.dim() - 1)))
