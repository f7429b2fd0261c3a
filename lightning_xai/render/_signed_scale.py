"""The signed colour scale of the SHAP figures: symmetric range, diverging map fading at 0, bar colours.

Also the check that turns signed values into a float CPU tensor of the expected shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.colors import Colormap, ListedColormap, to_rgb
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._overlay_tiles import _colormap

SHAP_LABEL = "SHAP value (→ class)"
_PERCENTILE = 99.0


def _symmetric_limit(*arrays: np.ndarray | Tensor, percentile: float = _PERCENTILE) -> float:
    """``percentile`` of ``|values|`` over every finite entry of ``arrays`` (1.0 when there is nothing)."""
    parts = [
        np.abs(np.asarray(a.detach().cpu().double() if isinstance(a, Tensor) else a, dtype=np.float64))
        for a in arrays
    ]
    flat = np.concatenate([p[np.isfinite(p)].ravel() for p in parts]) if parts else np.empty(0)
    if flat.size == 0:
        return 1.0
    limit = float(np.percentile(flat, percentile))
    if limit <= 0.0:
        limit = float(flat.max())
    return limit if limit > 0.0 else 1.0


def _signed_colormap(cmap: str | Colormap, fade: bool) -> Colormap:
    """The diverging map (NaN transparent); with ``fade`` its opacity falls to 0 at the centre (value 0)."""
    base = _colormap(cmap)
    if not fade:
        return base
    colours = base(np.linspace(0.0, 1.0, 256))
    distance = np.abs(np.linspace(-1.0, 1.0, 256))
    colours[:, 3] = np.clip(distance / 0.5, 0.0, 1.0) ** 1.2
    return ListedColormap(colours, name=f"{base.name}_faded").with_extremes(
        bad=(0.0, 0.0, 0.0, 0.0), under=colours[0], over=colours[-1]
    )


def _signed_colours(cmap: str | Colormap) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(positive, negative) bar colours taken from the ends of the diverging map."""
    base = _colormap(cmap)
    return to_rgb(base(0.85)), to_rgb(base(0.15))


def _values(values: Any, lead: tuple[int, ...], layout: str, name: str = "values") -> Tensor:
    """``values`` as a float CPU tensor ``(*lead, H, W)`` (a singleton channel after ``lead`` is dropped)."""
    if not isinstance(values, Tensor):
        raise TypeError(expected(name, "a torch.Tensor", type(values).__name__))
    out = values.detach().cpu().float()
    if out.ndim == len(lead) + 3 and out.shape[len(lead)] == 1:
        out = out.squeeze(len(lead))
    if out.ndim != len(lead) + 2 or tuple(out.shape[: len(lead)]) != lead or out.numel() == 0:
        raise ValueError(
            expected(name, f"a tensor of shape {layout} with leading dimensions {lead}", tuple(values.shape))
        )
    return out
