"""What the figure worker moves: one figure (:class:`FigureJob`), one event's figures (:class:`FigureBatch`), and
the small decisions about them (can a builder travel to the drawing process; draw one here)."""

from __future__ import annotations

import builtins
import io
import pickle
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FigureBatch", "FigureJob", "category", "cpu_pickle", "draw_here", "matplotlib_settings",
           "newest_unclaimed", "travels"]


@dataclass
class FigureJob:
    """One figure: its name, its builder (or an already drawn ``png``) and, for the process, the pickled job."""

    name: str
    builder: Any
    dpi: int
    payload: bytes | None = None
    png: bytes | None = None
    error: str | None = None
    trace: str = ""
    style: dict[str, Any] | None = None  # the matplotlib settings it travels with (drawn here: the same)
    claimed: bool = False  # a thread has taken it to draw (the worker's, or the one that flushes)
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class FigureBatch:
    """One event's figures and what to do with them: ``deliver(name, png)`` writes and logs one PNG and returns its
    file; ``finish(files, failed)`` appends the event's manifest line; ``where`` names the event in messages."""

    jobs: list[FigureJob]
    deliver: Callable[[str, bytes], str]
    finish: Callable[[list[str], dict[str, str]], None]
    where: str
    folder: str
    done: list[str] = field(default_factory=list)


def travels(builder: Any) -> bool:
    """Whether the drawing process can import what ``builder`` calls (not a user's ``__main__`` or a lambda).

    Example:
        >>> from functools import partial
        >>> from lightning_xai.render import overlay_grid
        >>> travels(partial(overlay_grid)), travels(lambda: None)
        (True, False)
    """
    func = getattr(builder, "func", builder)
    module = getattr(func, "__module__", None) or ""
    return callable(builder) and module != "__main__" and "<lambda>" not in getattr(func, "__qualname__", "<lambda>")


def draw_here(job: FigureJob) -> None:
    """Draw ``job`` in this process (its PNG, or its error and traceback), under the style it travels with."""
    try:
        from lightning_xai.render import draw_png

        png = draw_png(job.builder, job.dpi, job.style)
        job.png = b"" if png is None else png
    except Exception as err:
        job.error, job.trace = f"{type(err).__name__}: {err}", traceback.format_exc()


def matplotlib_settings() -> dict[str, Any]:
    """This process's matplotlib settings that a figure travels with (:func:`lightning_xai.render.matplotlib_style`,
    imported when the first figure is handed over)."""
    from lightning_xai.render import matplotlib_style

    return matplotlib_style()


def newest_unclaimed(batches: Iterable[FigureBatch], lock: threading.Lock) -> FigureJob | None:
    """Claim (under ``lock``) the newest job of ``batches`` that waits for the drawing process, or ``None``.

    Example:
        >>> job = FigureJob("a", None, 50, payload=b"x")
        >>> batch = FigureBatch([job], lambda n, p: n, lambda f, e: None, "here", ".")
        >>> newest_unclaimed([batch], threading.Lock()) is job, job.claimed, newest_unclaimed([batch], threading.Lock())
        (True, True, None)
    """
    with lock:
        job = next((j for b in reversed(list(batches)) for j in reversed(b.jobs)
                    if not j.claimed and j.payload is not None and j.png is None and j.error is None), None)
        if job is not None:
            job.claimed = True
    return job


def category(name: str) -> type[Warning]:
    """The warning class a drawing process named (``UserWarning`` for one it cannot find here).

    Example:
        >>> category("RuntimeWarning"), category("MatplotlibDeprecationWarning")
        (<class 'RuntimeWarning'>, <class 'UserWarning'>)
    """
    found = getattr(builtins, name, None)
    return found if isinstance(found, type) and issubclass(found, Warning) else UserWarning


class _CpuPickler(pickle.Pickler):
    """Pickles tensors that live on an accelerator as CPU copies (the drawing process never touches a GPU)."""

    def reducer_override(self, obj: Any) -> Any:
        device = getattr(obj, "device", None)
        if device is not None and getattr(device, "type", "cpu") not in ("cpu", "meta") and hasattr(obj, "cpu"):
            return obj.detach().cpu().__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        return NotImplemented


def cpu_pickle(obj: Any) -> bytes:
    """``pickle.dumps(obj)`` with every CUDA (or other accelerator) tensor inside pickled as its CPU copy.

    Example:
        >>> import torch
        >>> pickle.loads(cpu_pickle({"maps": torch.ones(2)}))["maps"].device.type
        'cpu'
    """
    buf = io.BytesIO()
    _CpuPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()
