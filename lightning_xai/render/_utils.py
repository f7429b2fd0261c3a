"""Figure plumbing shared by the renderers: Agg-backed figures, text wrapping, figure -> pixels / PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` and an explicit Agg canvas, never through
``pyplot``: nothing global (backend, current figure, figure manager registry) is touched, and a figure is
freed as soon as the last reference to it goes.
"""

from __future__ import annotations

import io
import struct
import textwrap
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import matplotlib as mpl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from lightning_xai._checks import check_positive_int, expected

__all__ = ["figure_to_array", "figure_to_png_bytes"]

#: Font sizes (points) used by every renderer; none is below 8.
TITLE_FONTSIZE = 9.0
LABEL_FONTSIZE = 9.0
TICK_FONTSIZE = 8.0
SUPTITLE_FONTSIZE = 11.0
# Average glyph width of DejaVu Sans as a fraction of the font size, to turn inches into characters.
_CHAR_WIDTH = 0.58


class _LiteralFigure(Figure):
    """A figure whose text is always drawn literally: ``$`` in a class name, run name or token is never mathtext.

    Texts made while the figure was built get ``parse_math=False`` at draw time (unless ``texts_literal`` says
    they were all made under ``text.parse_math=False``: :func:`lightning_xai.render.draw_png` builds so, which
    spares a walk over every artist), and those matplotlib makes while drawing (tick labels, offset texts) are
    made under ``text.parse_math=False``.
    """

    texts_literal = False

    def draw(self, renderer: Any) -> None:
        with mpl.rc_context({"text.parse_math": False}):
            if not self.texts_literal:
                for text in self.findobj(Text):
                    text.set_parse_math(False)
            super().draw(renderer)


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """An Agg-backed figure with constrained layout (so titles, labels and colour bar never overlap), or none
    (``layout=None``: the renderer places its axes itself, :mod:`lightning_xai.render._grid`), whose texts are
    drawn literally (no mathtext: user strings such as ``"$x_1_2$"`` appear as given)."""
    fig = _LiteralFigure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def wrap_titles(titles: Sequence[str], width_in: float, fontsize: float = TITLE_FONTSIZE) -> list[str]:
    """Wrap a set of titles alike: if any needs wrapping, every one is broken at its ``" | "`` separators."""
    wrapped = [wrap_text(t, width_in, fontsize) for t in titles]
    if all("\n" not in t for t in wrapped):
        return wrapped
    return [wrap_text(t.replace(" | ", "\n"), width_in, fontsize) for t in titles]


def wrap_text(text: str, width_in: float, fontsize: float = TITLE_FONTSIZE) -> str:
    """Wrap ``text`` to fit ``width_in`` inches, breaking at ``" | "`` separators first, then at spaces."""
    max_chars = max(int(width_in * 72.0 / (fontsize * _CHAR_WIDTH)), 8)
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        current = ""
        for part in paragraph.split(" | "):
            candidate = f"{current} | {part}" if current else part
            if len(candidate) <= max_chars:
                current = candidate
                continue
            if current:
                lines.append(current)
            pieces = textwrap.wrap(part, max_chars, break_long_words=True) or [""]
            lines.extend(pieces[:-1])
            current = pieces[-1]
        lines.append(current)
    return "\n".join(lines)


def check_titles(name: str, titles: Any, count: int) -> list[str] | None:
    """``titles`` as a list of ``count`` strings, or None."""
    if titles is None:
        return None
    if isinstance(titles, str) or not isinstance(titles, Sequence):
        raise TypeError(expected(name, f"a sequence of {count} strings or None", titles))
    if len(titles) != count:
        raise ValueError(expected(name, f"a sequence of {count} strings (one per sample)", list(titles)))
    return [str(t) for t in titles]


def _check_figure(fig: Any) -> Figure:
    if not isinstance(fig, Figure):
        raise TypeError(expected("fig", "a matplotlib.figure.Figure", type(fig).__name__))
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` with the Agg canvas and return its pixels.

    Args:
        fig: A matplotlib figure (from the renderers here or any other source).

    Returns:
        ``uint8`` array ``(H, W, 3)``, RGB, at the figure's own dpi.

    Raises:
        TypeError: If ``fig`` is not a :class:`matplotlib.figure.Figure`.

    Example:
        >>> fig = new_figure(1.0, 0.5)
        >>> array = figure_to_array(fig)
        >>> array.shape, array.dtype
        ((50, 100, 3), dtype('uint8'))
    """
    fig = _check_figure(fig)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def figure_to_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """Encode ``fig`` as PNG in memory, so that a sink can write the bytes atomically.

    The PNG carries no software/version metadata, so the same figure always gives the same bytes. The figure is
    drawn once (its layout, if any, runs inside that draw) and its pixels encoded: the pixels ``savefig`` gives,
    without its second, layout-only pass over every artist (measured: 10-40% of a figure's time on the callbacks'
    grids). An opaque figure is stored as RGB, "Up"-filtered, at zlib level 1 (:func:`encode_png`: a sixth of
    the encoding time of ``savefig``'s RGBA at level 6, ~20% more bytes).

    Args:
        fig: A matplotlib figure.
        dpi: Resolution in dots per inch.

    Returns:
        The PNG file's bytes.

    Raises:
        TypeError: If ``fig`` is not a :class:`matplotlib.figure.Figure`.
        ValueError: If ``dpi`` is not a positive integer.

    Example:
        >>> png = figure_to_png_bytes(new_figure(1.0, 1.0), dpi=50)
        >>> png[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    fig = _check_figure(fig)
    check_positive_int("dpi", dpi)
    buffer = io.BytesIO()
    rc = mpl.rcParams
    if (rc["savefig.facecolor"], rc["savefig.edgecolor"], rc["savefig.transparent"], rc["savefig.bbox"]) != (
            "auto", "auto", False, None):  # a user's savefig style: savefig applies it
        fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
        return buffer.getvalue()
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return encode_png(np.asarray(canvas.buffer_rgba()), dpi)


def encode_png(pixels: np.ndarray, dpi: int = 100) -> bytes:
    """PNG bytes of RGBA ``pixels`` ``(H, W, 4)`` (stored as RGB when every pixel is opaque), with the resolution
    and no other metadata: every row filtered by PNG's "Up" filter (one vectorised subtraction) and deflated by
    zlib at level 1.

    Pillow (matplotlib's PNG writer) tries the five PNG filters on every row and keeps the best; on the
    callbacks' figures "Up" alone gives the same sizes in half the time (``python benchmarks/png_encode.py``:
    Grad-CAM grid 1012 x 601, 23 ms -> 11 ms, 323 KiB both). The pixels read back exactly (tests/render).

    Example:
        >>> encode_png(np.full((2, 3, 4), 255, np.uint8))[:4]
        b'\x89PNG'
    """
    if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4) or pixels.dtype != np.uint8:
        raise ValueError(expected("pixels", "a uint8 array (H, W, 3 or 4)", f"{pixels.dtype} {pixels.shape}"))
    height, width, channels = pixels.shape
    if channels == 4 and pixels[..., 3].min() == 255:  # opaque: RGB (Pillow drops alpha 2x faster than numpy)
        from PIL import Image

        rgba = Image.frombuffer("RGBA", (width, height), np.ascontiguousarray(pixels), "raw", "RGBA", 0, 1)
        pixels, channels = np.asarray(rgba.convert("RGB")), 3
    flat = np.ascontiguousarray(pixels).reshape(height, width * channels)
    rows = np.empty((height, width * channels + 1), np.uint8)
    rows[:, 0] = 2  # filter type "Up": each byte minus the byte above it (the first row: minus zero)
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8: modulo 256, as PNG defines it
    rows[0, 1:] = flat[0]
    per_metre = round(dpi / 0.0254)
    return b"".join((
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2 if channels == 3 else 6, 0, 0, 0)),
        _chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
        _chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)),
        _chunk(b"IEND", b""),
    ))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
