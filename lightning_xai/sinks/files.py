"""Atomic file writes and the artifact manifest (``<log_dir>/xai/manifest.jsonl``)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

try:  # POSIX: an exclusive lock around each manifest append
    import fcntl
except ImportError:  # pragma: no cover - Windows: O_APPEND alone
    fcntl = None  # type: ignore[assignment]

__all__ = ["append_manifest", "atomic_write_bytes", "manifest_path", "read_manifest", "save_json", "save_npy"]


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers see all of it or none of it.

    Example:
        >>> import tempfile, pathlib
        >>> p = atomic_write_bytes(pathlib.Path(tempfile.mkdtemp()) / "a.txt", b"hi")
        >>> p.read_bytes()
        b'hi'
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):  # a full disk, a read-only folder: say which file
            raise type(err)(err.errno, f"lightning_xai could not write: {err.strerror or err}", str(path)) from err
        raise
    return path


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save an array as ``.npy`` atomically (never pickled).

    Example:
        >>> import tempfile, pathlib
        >>> p = save_npy(pathlib.Path(tempfile.mkdtemp()) / "a.npy", np.zeros((2, 3), dtype=np.float32))
        >>> np.load(p).shape
        (2, 3)
    """
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def save_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Save ``obj`` as indented JSON atomically.

    Example:
        >>> import tempfile, pathlib
        >>> json.loads(save_json(pathlib.Path(tempfile.mkdtemp()) / "a.json", {"a": 1}).read_text())
        {'a': 1}
    """
    return atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def manifest_path(log_dir: str | os.PathLike[str]) -> Path:
    """The manifest that the sinks of a run logging to ``log_dir`` append to: ``<log_dir>/xai/manifest.jsonl``.

    Example:
        >>> manifest_path("logs/version_0").as_posix()
        'logs/version_0/xai/manifest.jsonl'
    """
    return Path(log_dir) / "xai" / "manifest.jsonl"


def append_manifest(manifest: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Append one JSON line to the manifest, safe for several writers (processes sharing one log dir).

    The line is written with one ``O_APPEND`` write under an exclusive ``flock`` of the file, then fsynced; a
    line cut short by a crash is closed with a newline before the next one (and skipped by :func:`read_manifest`),
    so no other line is ever lost or merged.

    Example:
        >>> import tempfile, pathlib
        >>> m = pathlib.Path(tempfile.mkdtemp()) / "manifest.jsonl"
        >>> _ = append_manifest(m, {"a": 1}); _ = append_manifest(m, {"a": 2})
        >>> [r["a"] for r in read_manifest(m)]
        [1, 2]
    """
    manifest = Path(manifest)
    line = json.dumps(record, sort_keys=True, default=str).encode() + b"\n"
    try:
        manifest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size:
                with open(manifest, "rb") as fh:  # a line cut short by a crash: close it first
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
    except OSError as err:
        raise type(err)(err.errno, f"lightning_xai could not append to the manifest: {err.strerror or err}",
                        str(manifest)) from err
    return manifest


def read_manifest(manifest: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a manifest, skipping lines that do not parse.

    Example:
        >>> list(read_manifest("/nonexistent/manifest.jsonl"))
        []
    """
    manifest = Path(manifest)
    if not manifest.exists():
        return
    for line in manifest.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue
