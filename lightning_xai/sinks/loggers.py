"""The artifact sink: every picture, number and array an explanation produces goes through here.

Everything is written under ``<log_dir>/xai/<callback>/<stage>-epoch=E-step=S/`` (PNG, ``.npy``, JSON) and listed in
``<log_dir>/xai/manifest.jsonl`` (one line per artifact set, with the scalars logged for it); TensorBoard gets
images, scalars, histograms and text under ``xai/<callback>/<name>``; other loggers get scalars through
``log_metrics`` and images through their own ``log_image`` where they have one, with a one-time warning naming
what they could not receive.

Nothing is lost: an event folder is claimed atomically (``os.mkdir``) and never reused, so two runs sharing a log
dir (``logger=False``, two processes side by side, a second ``validate`` of one checkpoint) write
``<stage>-epoch=E-step=S``, then ``...-v1``, ``...-v2``, like ``ModelCheckpoint``'s file versions. Arrays and JSON
are written when they are handed over; figures are drawn at :meth:`ArtifactSink.commit`, after the data, each on
its own: a figure that fails is a warning naming it (or, with ``strict``, an error after the data and the manifest
line are written).
"""

from __future__ import annotations

import io
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lightning_xai.sinks._event import Event, safe_name
from lightning_xai.sinks._png import decode_png, tensorboard_png
from lightning_xai.sinks._worker import FigureBatch, FigureWorker
from lightning_xai.sinks.files import append_manifest, atomic_write_bytes, manifest_path, save_json, save_npy

__all__ = ["ArtifactSink", "Event"]

_WARNED: set[tuple[int, str]] = set()  # (id(logger), what): warn once per logger instance
_SILENT = ("DummyLogger",)  # loggers that receive nothing on purpose (fast_dev_run): no warning, nothing sent


@dataclass
class ArtifactSink:
    """Send one event's artifacts to the loggers and to files, and record them in the manifest.

    Args:
        loggers: the Trainer's loggers (``trainer.loggers``).
        log_dir: root folder; artifacts go under ``<log_dir>/xai``.
        event: what explanation this is.
        write: ``False`` on non-zero ranks: nothing is sent or written.
        strict: raise (after the data and the manifest line are written) when a figure fails, instead of warning.
        scalars_to_loggers: ``False`` when Lightning itself logs the scalars (a callback hands them to
            ``LightningModule.log`` at the same step): they are still recorded in the manifest and ``published``.
        draw_figures: ``False`` skips the figures of this event (``render_every_n_epochs``): the data is written.
        worker: draw the figures in the background (:mod:`lightning_xai.sinks._worker`); ``None`` draws them at
            :meth:`commit`.

    Example:
        >>> import tempfile
        >>> sink = ArtifactSink([], tempfile.mkdtemp(), Event("gradcam", "validate", 0, 0))
        >>> sink.scalar("gradcam/pointing_game", 0.9)
        >>> rec = sink.commit(method="gradcam"); rec["files"], rec["scalars"]
        ([], {'xai/gradcam/gradcam/pointing_game': 0.9})
        >>> sink.published  # every scalar of the event, for trainer.callback_metrics
        {'xai/gradcam/gradcam/pointing_game': 0.9}
    """

    loggers: list[Any]
    log_dir: str
    event: Event
    write: bool = True
    strict: bool = False
    scalars_to_loggers: bool = True
    worker: FigureWorker | None = None
    draw_figures: bool = True
    counts: dict[str, int] = field(default_factory=lambda: {"files": 0, "figures": 0, "scalars": 0})
    files: list[str] = field(default_factory=list)
    logged: dict[str, float] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)
    _claimed: Path | None = field(default=None, repr=False)
    _figures: list[tuple[str, Any, int]] = field(default_factory=list, repr=False)

    @property
    def root(self) -> Path:
        return Path(self.log_dir) / "xai"

    @property
    def folder(self) -> Path:
        """This event's folder: ``<stage>-epoch=E-step=S`` or, when another run already has it, ``...-vN``.

        Claimed with ``os.mkdir`` on first use, so two writers never share (or overwrite) one folder.
        """
        if self._claimed is None:
            parent = self.root / self.event.callback
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise _where(err, parent, "create the artifact folder") from err
            base, version = self.event.folder, 0
            while True:
                path = parent / (base if version == 0 else f"{base}-v{version}")
                try:
                    path.mkdir()
                except FileExistsError:
                    version += 1
                    continue
                except OSError as err:
                    raise _where(err, path, "create the artifact folder") from err
                self._claimed = path
                break
        return self._claimed

    def tag(self, name: str) -> str:
        return f"xai/{self.event.callback}/{name}"

    def _tb(self) -> list[Any]:
        return [lg.experiment for lg in self.loggers if type(lg).__name__ == "TensorBoardLogger"]

    def _others(self) -> list[Any]:
        return [lg for lg in self.loggers if type(lg).__name__ not in ("TensorBoardLogger", *_SILENT)]

    def _warn_once(self, logger: Any, what: str) -> None:
        key = (id(logger), what)
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(
                f"lightning_xai: {type(logger).__name__} cannot receive {what}; they are written under "
                f"{self.root} instead (use a TensorBoardLogger to see them in TensorBoard).",
                stacklevel=3,
            )

    def _file(self, name: str, suffix: str) -> Path:
        path = self.folder / f"{safe_name(name)}{suffix}"
        self.files.append(str(path.relative_to(self.root)))
        return path

    def figure(self, name: str, fig: Any | Callable[[], Any], dpi: int = 100) -> None:
        """Log a matplotlib figure (or a zero-argument callable that builds one, or ``None``) as an image and write
        it as PNG.

        The figure is built and drawn at :meth:`commit`, after every array and JSON of the event: one that fails
        costs only itself (a warning naming it), never the data.
        """
        if self.write and self.draw_figures:
            self._figures.append((name, fig, dpi))

    def _deliver(self, name: str, png: bytes) -> str:
        """Write one drawn figure as ``<name>.png`` and log it; return the file (relative to ``<log_dir>/xai``)."""
        path = self.folder / f"{safe_name(name)}.png"
        atomic_write_bytes(path, png)
        step = self.event.global_step
        for exp in self._tb():
            tensorboard_png(exp, self.tag(name), png, step)
        image: np.ndarray | None = None
        for lg in self._others():
            if hasattr(lg, "log_image"):
                image = decode_png(png) if image is None else image
                lg.log_image(key=self.tag(name), images=[image], step=step)
            else:
                self._warn_once(lg, "images")
        return str(path.relative_to(self.root))

    def scalar(self, name: str, value: float) -> None:
        """Log one number at the event's global step; the next manifest line records it under its tag."""
        if not self.write:
            return
        self.logged[self.tag(name)] = float(value)
        self.published[self.tag(name)] = float(value)
        if not self.scalars_to_loggers:
            return
        for exp in self._tb():
            exp.add_scalar(self.tag(name), float(value), self.event.global_step)
        for lg in self._others():
            lg.log_metrics({self.tag(name): float(value)}, step=self.event.global_step)

    def scalars(self, values: dict[str, float]) -> None:
        """Log several numbers (each recorded in the next manifest line, as :meth:`scalar` does)."""
        for k, v in values.items():
            self.scalar(k, v)

    def histogram(self, name: str, values: np.ndarray) -> None:
        """Log a histogram of the finite ``values`` and write its 30 bins as ``<name>.hist.json``."""
        if not self.write:
            return
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        counts, edges = np.histogram(values, bins=30)
        save_json(self._file(name, ".hist.json"), {"edges": edges.tolist(), "counts": counts.tolist()})
        for exp in self._tb():
            exp.add_histogram(self.tag(name), values, self.event.global_step)
        for lg in self._others():
            self._warn_once(lg, "histograms")

    def text(self, name: str, text: str) -> None:
        """Log markdown text (TensorBoard's Text tab) and write it as ``.md``."""
        if not self.write:
            return
        atomic_write_bytes(self._file(name, ".md"), text.encode())
        for exp in self._tb():
            exp.add_text(self.tag(name), text, self.event.global_step)
        for lg in self._others():
            if hasattr(lg, "log_text"):
                lg.log_text(key=self.tag(name), columns=["text"], data=[[text]], step=self.event.global_step)
            else:
                self._warn_once(lg, "text")

    def array(self, name: str, array: np.ndarray) -> None:
        """Write an array as ``<name>.npy``."""
        if self.write:
            save_npy(self._file(name, ".npy"), array)

    def arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Write several named arrays as one ``<name>.npz`` (never pickled)."""
        if self.write:
            buf = io.BytesIO()
            np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()}, allow_pickle=False)
            atomic_write_bytes(self._file(name, ".npz"), buf.getvalue())

    def json(self, name: str, obj: Any) -> None:
        """Write ``obj`` as ``<name>.json``."""
        if self.write:
            save_json(self._file(name, ".json"), obj)

    def commit(self, method: str, **extra: Any) -> dict[str, Any]:
        """Draw the figures handed over since the last commit (each on its own: a failure is a warning naming
        it), then append one manifest line listing the files written, the scalars logged (by tag) and the
        figures that failed, and flush the loggers. With ``strict``, the first figure failure is raised after
        the manifest line is written.

        With a ``worker`` (and not ``strict``) the figures are drawn in the background instead: this returns at
        once, the worker writes the PNGs and then the manifest line (the returned record lists the data files;
        the line gets the PNGs too). ``worker.flush()`` waits for it.
        """
        record = {
            **asdict(self.event),
            "folder": str(self.folder.relative_to(self.root)) if self._claimed is not None or self._figures else None,
            "method": method,
            "files": list(self.files),
            "scalars": dict(self.logged),
            "timestamp": time.time(),
        }
        record.update(extra)
        figures, self._figures = self._figures, []
        self.counts["files"] += len(self.files)
        self.counts["figures"] += len(figures)
        self.counts["scalars"] += len(self.logged)
        self.files.clear()
        self.logged.clear()
        if not self.write:
            return record
        if self.worker is not None and figures and not self.strict:
            jobs = [self.worker.job(name, fig, dpi) for name, fig, dpi in figures]
            ev = self.event
            self.worker.submit(FigureBatch(
                jobs, self._deliver, partial(self._finish, record),
                f"{ev.callback} at {ev.stage} epoch {ev.epoch} step {ev.global_step}", str(self.folder)))
            return record
        from lightning_xai.render import draw_png  # the figures' own package draws them

        failed: dict[str, str] = {}
        first: BaseException | None = None
        drawn: list[str] = []
        for name, fig, dpi in figures:
            try:
                png = draw_png(fig, dpi)
                if png is not None:
                    drawn.append(self._deliver(name, png))
            except Exception as err:  # one figure must not take the epoch's data (or the other figures) with it
                failed[name] = f"{type(err).__name__}: {err}"
                first = first or err
                if not self.strict:
                    warnings.warn(
                        f"lightning_xai: the figure {self.tag(name)!r} of {self.event.callback} at "
                        f"{self.event.stage} epoch {self.event.epoch} step {self.event.global_step} could not be "
                        f"drawn ({type(err).__name__}: {err}); its arrays and JSON are written in "
                        f"{self.folder}.\n{traceback.format_exc()}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        self._finish(record, drawn, failed)
        if first is not None and self.strict:
            raise first
        return record

    def _finish(self, record: dict[str, Any], drawn: list[str], failed: dict[str, str]) -> None:
        """Append the event's manifest line (its data files, then the figures drawn) and flush TensorBoard."""
        record["files"] = [*record["files"], *drawn]
        if failed:
            record["failed_figures"] = failed
        append_manifest(manifest_path(self.log_dir), record)
        for exp in self._tb():
            exp.flush()


def _where(err: OSError, path: Path, what: str) -> OSError:
    """``err`` again, naming the path it concerns (``[Errno 27] File too large: '<path>'``)."""
    return type(err)(err.errno, f"lightning_xai could not {what}: {err.strerror or err}", str(path))
