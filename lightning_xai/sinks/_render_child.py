"""The figure-drawing process: ``python -c "from lightning_xai.sinks._render_child import main; main()"``.

It reads jobs from stdin and answers on stdout, one at a time, each message an 8-byte little-endian length and a
pickle. A job is ``(style, builder, dpi)``: the parent's matplotlib settings (so a user's style applies here too), a
picklable zero-argument callable that builds a figure (``functools.partial`` of a module-level renderer over
plain arrays) and the dpi. The answer is ``("ok", png, warnings)``, ``("none", b"", warnings)`` when the builder
had nothing to draw, or ``("error", description, traceback)``; ``("load", description, traceback)`` says the job
could not be unpickled here (the parent then draws it itself). Anything a builder prints goes to stderr, never
into the answers. The process ends when stdin closes (the parent ended or closed it).

Nothing here imports Lightning (nor matplotlib: :func:`lightning_xai.render.draw_png` draws), so the process is
ready a few seconds after it starts, drawing on a core the training loop does not use.
"""

from __future__ import annotations

import pickle
import struct
import sys
import traceback
import warnings
from typing import IO, Any

from lightning_xai._priority import lower_priority

__all__ = ["read_message", "write_message"]

_HEADER = struct.Struct("<Q")


def write_message(stream: IO[bytes], obj: Any) -> None:
    """Write one length-prefixed pickle.

    Example:
        >>> import io
        >>> buf = io.BytesIO(); write_message(buf, ("ok", b"png", [])); _ = buf.seek(0); read_message(buf)
        ('ok', b'png', [])
    """
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def read_message(stream: IO[bytes], load: bool = True) -> Any:
    """Read one length-prefixed message (``None`` at end of stream); the pickle itself when ``load`` is false."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    payload = _read_exactly(stream, _HEADER.unpack(header)[0])
    if payload is None:
        return None
    return pickle.loads(payload) if load else payload


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _draw(job: bytes) -> tuple[str, Any, Any]:
    try:
        style, builder, dpi = pickle.loads(job)
    except Exception as err:  # a builder defined where this process cannot import it (a user's __main__)
        return "load", f"{type(err).__name__}: {err}", traceback.format_exc()
    from lightning_xai.render import draw_png

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            png = draw_png(builder, dpi, style)
        except Exception as err:
            return "error", f"{type(err).__name__}: {err}", traceback.format_exc()
    return ("none", b"", _plain(caught)) if png is None else ("ok", png, _plain(caught))


def _plain(caught: list[warnings.WarningMessage]) -> list[tuple[str, str]]:
    return [(w.category.__name__, str(w.message)) for w in caught]


def main() -> None:
    """Serve jobs until stdin closes (the renderers draw on their own Agg canvases; ``MPLBACKEND=Agg`` is set)."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a print in a builder must not corrupt the answers
    lower_priority()
    while True:
        job = read_message(inp)  # the pickled job, as bytes: unpickled in _draw, where a failure is an answer
        if job is None:
            return
        write_message(out, _draw(job))


if __name__ == "__main__":
    main()
