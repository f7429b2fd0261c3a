"""The SQLite layout of :class:`~lightning_xai.sinks.store.AttributionStore`: opening, checks, array encoding.

A store is one SQLite file in WAL mode. ``PRAGMA user_version`` and the ``meta`` table hold the schema
version; ``meta`` also holds a magic string, so a file is only ever written to when it is empty or already a
store.
Arrays are raw little-endian bytes with their dtype and shape beside them: no pickle, ever.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = "lightning_xai.AttributionStore"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
SQLITE_HEADER = b"SQLite format 3\x00"
Connect = Callable[[], sqlite3.Connection]  # a store's connection getter (it reconnects after a fork)

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    (
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL,"
        " meta TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, epoch INTEGER NOT NULL,"
        " global_step INTEGER NOT NULL, method TEXT NOT NULL, probe_fingerprint TEXT NOT NULL,"
        " checkpoint_path TEXT, model_hash TEXT, created TEXT NOT NULL, meta TEXT NOT NULL)"
    ),
    "CREATE INDEX snapshots_by_run ON snapshots (run_id, global_step, id)",
    (
        "CREATE TABLE arrays (snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,"
        " name TEXT NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, scale REAL NOT NULL,"
        " data BLOB NOT NULL, PRIMARY KEY (snapshot_id, name))"
    ),
)

# Stored dtypes, as numpy ``dtype.str`` (explicit byte order): floats as one of FLOAT_DTYPES, others exactly.
FLOAT_DTYPES = {"float16": "<f2", "float32": "<f4"}
_EXACT_DTYPES = {
    np.dtype(t).newbyteorder("<").str for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, bool)
}
_LOADABLE = set(FLOAT_DTYPES.values()) | _EXACT_DTYPES


# What an SQLite or OS error usually means for a store, appended to its message.
_HINTS = (
    ("unable to open database file", "does its folder exist, is it writable, is a part of the path a file?"),
    ("disk I/O error", "is the disk full, or over a quota or a file-size limit?"),
    ("database or disk is full", "is the disk full, or over a quota or a file-size limit?"),
    ("readonly database", "is the file or its folder read-only?"),
    ("database is locked", f"another process held the write lock for more than {BUSY_TIMEOUT_S:.0f} s"),
    ("File exists", "is some part of the path a file?"),
    ("Not a directory", "is some part of the path a file?"),
)


@contextmanager
def about(path: Path, doing: str) -> Iterator[None]:
    """Raise SQLite and OS errors of ``doing`` again, of the same type, with the store's path and a hint.

    Example:
        >>> try:
        ...     with about(Path("/data/s.sqlite"), "write a snapshot"):
        ...         raise sqlite3.OperationalError("disk I/O error")
        ... except sqlite3.OperationalError as err:
        ...     print(err)  # doctest: +NORMALIZE_WHITESPACE
        AttributionStore /data/s.sqlite: could not write a snapshot: disk I/O error (is the disk full, or
        over a quota or a file-size limit?)
    """
    try:
        yield
    except (sqlite3.Error, OSError) as err:
        if f"AttributionStore {path}:" in str(err):  # already said where
            raise
        text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        if isinstance(err, OSError) and err.filename is not None and str(err.filename) != str(path):
            text = f"{text}: {err.filename!r}"
        hint = next((h for key, h in _HINTS if key in text), None)
        message = f"AttributionStore {path}: could not {doing}: {text}" + (f" ({hint})" if hint else "")
        raise _again(err, message) from err


def _again(err: BaseException, message: str) -> BaseException:
    """``err``'s type with a new message (errno and SQLite error codes kept)."""
    if isinstance(err, OSError):
        again: BaseException = type(err)(err.errno, message) if err.errno is not None else type(err)(message)
        return again
    again = type(err)(message)
    for attr in ("sqlite_errorcode", "sqlite_errorname"):
        if hasattr(err, attr):
            try:
                setattr(again, attr, getattr(err, attr))
            except AttributeError:  # read-only on some versions
                pass
    return again


def _refuse(path: Path, what: str) -> ValueError:
    return ValueError(
        f"{path} is not an AttributionStore: {what}. lightning_xai will not overwrite it; "
        "pass the path of an existing store or of a new file."
    )


def _state(conn: sqlite3.Connection, path: Path) -> tuple[str, int]:
    """``("empty", 0)``, ``("store", schema_version)``, or a ValueError for any other database. Reads only."""
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if not tables and version == 0:
        return "empty", 0
    meta: dict[str, str] = {}
    if "meta" in tables:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:  # a `meta` table of another design: not a store
            pass
    if meta.get("magic") != MAGIC:
        raise _refuse(
            path, f"it is an SQLite database without the {MAGIC!r} marker (its tables: {sorted(tables)})"
        )
    if meta.get("schema_version") != str(version):
        raise ValueError(
            f"{path} is a damaged AttributionStore: its schema versions disagree (user_version {version}, "
            f"meta {meta.get('schema_version')!r}). The file was not changed."
        )
    return "store", version


def _initialise(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema, unless another process did it first (checked under the write lock)."""
    conn.execute("PRAGMA journal_mode=WAL")  # on an empty database: writes only the header
    conn.execute("BEGIN IMMEDIATE")
    try:
        if _state(conn, path)[0] == "empty":
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("magic", MAGIC), ("schema_version", str(SCHEMA_VERSION))],
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect(path: Path, create: bool) -> sqlite3.Connection:
    """Open (or, with ``create``, make) the store at ``path``; anything else there is refused, not written.

    SQLite and OS errors name ``path`` (see :func:`about`).
    """
    with about(path, "create the store" if create and not path.exists() else "open the store"):
        return _connect(path, create)


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    if path.is_dir():
        raise _refuse(path, "it is a directory")
    exists = path.exists()
    if not exists and not create:
        raise FileNotFoundError(f"No AttributionStore at {path} (create=False).")
    if exists and path.stat().st_size > 0:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise _refuse(path, f"it is not an SQLite database (it starts with {head!r})")
    if not exists:
        path.parent.mkdir(parents=True, exist_ok=True)
    target = str(path) if create else f"{path.resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=not create)
    try:
        try:
            state, version = _state(conn, path)
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError):  # locked, unreadable: not a verdict on the file
                raise
            raise _refuse(path, f"it is a damaged SQLite database ({err})") from err
        if state == "empty":
            if not create:
                raise _refuse(path, "it is an empty file (pass create=True to make a store there)")
            _initialise(conn, path)
        elif version > SCHEMA_VERSION:
            raise ValueError(
                f"{path} is an AttributionStore of schema version {version}, newer than this lightning_xai "
                f"supports (version {SCHEMA_VERSION}): upgrade lightning_xai to read it. "
                "The file was not changed."
            )
        elif version != SCHEMA_VERSION:
            raise ValueError(
                f"{path} is an AttributionStore of unknown schema version {version}; expected "
                f"{SCHEMA_VERSION}. The file was not changed."
            )
        conn.execute("PRAGMA journal_mode=WAL")  # already WAL: no change
        conn.execute("PRAGMA synchronous=FULL")  # a committed snapshot survives a crash or power loss
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def encode_array(name: str, array: np.ndarray, dtype: str) -> tuple[str, str, str, float, bytes]:
    """Row of the ``arrays`` table (without the snapshot id): name, stored dtype, shape (JSON), scale, bytes.

    Floating arrays are stored as ``dtype``. For float16 they are first divided by a power of two that brings
    their largest finite ``|value|`` into [2^14, 2^15), so neither large values overflow nor small ones
    (gradients of 1e-7) vanish: every value keeps float16's relative precision (2^-11) down to 2^-28 of the
    largest. Integer and bool arrays are stored exactly.
    """
    scale = 1.0
    if array.dtype.kind == "f":
        stored = np.dtype(FLOAT_DTYPES[dtype])
        finite = np.abs(array[np.isfinite(array)])
        largest = float(finite.max()) if finite.size else 0.0
        if stored.itemsize == 2 and largest > 0:
            scale = math.ldexp(1.0, math.frexp(largest)[1] - 15)
            array = array.astype(np.float64 if array.itemsize > 4 else np.float32) / scale  # exact: 2^n
    elif array.dtype.kind in "biu" and array.dtype.newbyteorder("<").str in _EXACT_DTYPES:
        stored = array.dtype.newbyteorder("<")
    else:
        raise TypeError(
            f"Expected argument `arrays[{name!r}]` to be a floating array, or one of int8, int16, int32, "
            f"int64, uint8 or bool, but got dtype {array.dtype}."
        )
    data = np.ascontiguousarray(array, dtype=stored).tobytes()
    return name, stored.str, json.dumps(list(array.shape)), scale, data


def decode_array(name: str, dtype: str, shape: str, scale: float, data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_array`: floats as float32 (scaled back exactly), other dtypes as stored."""
    if dtype not in _LOADABLE:
        raise ValueError(f"Array {name!r} has stored dtype {dtype!r}, which this lightning_xai cannot read.")
    dims = tuple(int(d) for d in json.loads(shape))
    stored = np.dtype(dtype)
    if len(data) != math.prod(dims) * stored.itemsize:
        raise ValueError(f"Array {name!r} is damaged: {len(data)} bytes for shape {dims} of {dtype}.")
    array = np.frombuffer(data, dtype=stored).reshape(dims)
    if stored.kind == "f":
        return array.astype(np.float32) * np.float32(scale)
    return array.astype(stored.newbyteorder("="))


def dumps(obj: Any) -> str:
    """JSON for the ``meta`` columns (as the manifest: sorted keys, unknown objects as ``str``)."""
    return json.dumps({} if obj is None else obj, sort_keys=True, default=str)
