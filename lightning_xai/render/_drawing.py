"""Figure builders to PNG bytes, in whatever process draws them (the training loop or the drawing process)."""

from __future__ import annotations

import contextlib
from typing import Any

import matplotlib as mpl

from lightning_xai.render._utils import figure_to_png_bytes

__all__ = ["draw_png", "matplotlib_style"]


def matplotlib_style() -> dict[str, Any]:
    """The caller's matplotlib settings (``rcParams`` but the backend), to draw a figure elsewhere alike.

    Example:
        >>> "font.size" in matplotlib_style() and "backend" not in matplotlib_style()
        True
    """
    return {k: v for k, v in mpl.rcParams.items() if k != "backend"}


def draw_png(builder: Any, dpi: int, style: dict[str, Any] | None = None) -> bytes | None:
    """Build (when ``builder`` is a callable) and draw a figure to PNG bytes (:func:`figure_to_png_bytes`) under
    ``style`` (:func:`matplotlib_style` of the process that asked; default the current settings); ``None`` when
    the builder had nothing to draw.

    Example:
        >>> from functools import partial
        >>> from lightning_xai.render._utils import new_figure
        >>> draw_png(partial(new_figure, 1.0, 0.5), dpi=20)[:4]
        b'\\x89PNG'
    """
    with mpl.rc_context(style) if style is not None else contextlib.nullcontext():
        if callable(builder) and not hasattr(builder, "savefig"):
            with mpl.rc_context({"text.parse_math": False}):  # every text the builder makes is literal
                fig = builder()
            if hasattr(fig, "texts_literal"):  # the renderers' figures (render/_utils.py new_figure)
                fig.texts_literal = True
        else:
            fig = builder
        return None if fig is None else figure_to_png_bytes(fig, dpi)
