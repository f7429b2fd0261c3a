"""The artifact sink: every picture, number and array an explanation produces goes through here.

Everything is written under ``<log_dir>/xai/<callback>/<stage>-epoch=E-step=S/`` (PNG, ``.npy``, JSON) and listed in
``<log_dir>/xai/manifest.jsonl`` (one line per artifact set, with the scalars logged for it); TensorBoard gets
images, scalars, histograms and text under ``xai/<callback>/<name>``; other loggers get scalars through
``log_metrics`` and images through their own ``log_image`` where they have one, with a one-time warning naming
what they could not receive.
"""

from __future__ import annotations

import io
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_xai.sinks.files import append_manifest, atomic_write_bytes, manifest_path, save_json, save_npy

__all__ = ["ArtifactSink", "Event"]

_WARNED: set[tuple[int, str]] = set()  # (id(logger), what): warn once per logger instance


@dataclass
class Event:
    """Where and when an explanation happened.

    Example:
        >>> Event("gradcam", "validate", epoch=2, global_step=40).folder
        'validate-epoch=2-step=40'
    """

    callback: str
    stage: str
    epoch: int
    global_step: int
    model_hash: str = ""
    ckpt_path: str | None = None

    @property
    def folder(self) -> str:
        return f"{self.stage}-epoch={self.epoch}-step={self.global_step}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name)


@dataclass
class ArtifactSink:
    """Send one event's artifacts to the loggers and to files, and record them in the manifest.

    Args:
        loggers: the Trainer's loggers (``trainer.loggers``).
        log_dir: root folder; artifacts go under ``<log_dir>/xai``.
        event: what explanation this is.
        write: ``False`` on non-zero ranks: nothing is sent or written.

    Example:
        >>> import tempfile
        >>> sink = ArtifactSink([], tempfile.mkdtemp(), Event("gradcam", "validate", 0, 0))
        >>> sink.scalar("gradcam/pointing_game", 0.9)
        >>> rec = sink.commit(method="gradcam"); rec["files"], rec["scalars"]
        ([], {'xai/gradcam/gradcam/pointing_game': 0.9})
    """

    loggers: list[Any]
    log_dir: str
    event: Event
    write: bool = True
    files: list[str] = field(default_factory=list)
    logged: dict[str, float] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.log_dir) / "xai"

    @property
    def folder(self) -> Path:
        return self.root / self.event.callback / self.event.folder

    def tag(self, name: str) -> str:
        return f"xai/{self.event.callback}/{name}"

    def _tb(self) -> list[Any]:
        return [lg.experiment for lg in self.loggers if type(lg).__name__ == "TensorBoardLogger"]

    def _others(self) -> list[Any]:
        return [lg for lg in self.loggers if type(lg).__name__ != "TensorBoardLogger"]

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
        path = self.folder / f"{_safe(name)}{suffix}"
        self.files.append(str(path.relative_to(self.root)))
        return path

    def figure(self, name: str, fig: Any, dpi: int = 100) -> None:
        """Log a matplotlib figure as an image and write it as PNG."""
        if not self.write:
            return
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        png = buf.getvalue()
        atomic_write_bytes(self._file(name, ".png"), png)
        step = self.event.global_step
        image: np.ndarray | None = None
        for exp in self._tb():
            image = _decode_png(png) if image is None else image
            exp.add_image(self.tag(name), image, step, dataformats="HWC")
        for lg in self._others():
            if hasattr(lg, "log_image"):
                image = _decode_png(png) if image is None else image
                lg.log_image(key=self.tag(name), images=[image], step=step)
            else:
                self._warn_once(lg, "images")

    def scalar(self, name: str, value: float) -> None:
        """Log one number at the event's global step; the next manifest line records it under its tag."""
        if not self.write:
            return
        self.logged[self.tag(name)] = float(value)
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
        """Append one manifest line listing the files written and the scalars logged (by tag) since the last
        commit, then flush the loggers."""
        record = {
            **asdict(self.event),
            "method": method,
            "files": list(self.files),
            "scalars": dict(self.logged),
            "timestamp": time.time(),
        }
        record.update(extra)
        if self.write:
            append_manifest(manifest_path(self.log_dir), record)
            for exp in self._tb():
                exp.flush()
        self.files.clear()
        self.logged.clear()
        return record


def _decode_png(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
