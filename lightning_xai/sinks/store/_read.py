"""The read side of :class:`~lightning_xai.sinks.store.AttributionStore`: runs, snapshots, arrays, lookups.

The SQL functions take the store's open connection. A lookup that finds nothing raises a ``ValueError``
listing what the run holds. The store's reading methods are one call each to the functions at the end
(:func:`list_runs`, :func:`list_snapshots`, :func:`load_snapshot`, :func:`load_reference`,
:func:`read_snapshot`): they take the store's connection getter and path, and name the path in SQLite and OS
errors.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import torch

import lightning_xai.sinks.store._schema as schema
from lightning_xai._checks import expected
from lightning_xai.sinks.store._records import RunInfo, Snapshot, SnapshotInfo, listing, select

__all__ = [
    "list_runs",
    "list_snapshots",
    "load_arrays",
    "load_reference",
    "load_snapshot",
    "pick_reference",
    "pick_snapshot",
    "read_snapshot",
    "run_infos",
    "snapshot_infos",
]

_SNAPSHOT_COLUMNS = (
    "s.id, r.name, s.epoch, s.global_step, s.method, s.probe_fingerprint, s.checkpoint_path, s.model_hash,"
    " s.created, s.meta"
)


def run_infos(db: sqlite3.Connection) -> list[RunInfo]:
    """Every run, in the order they were created."""
    rows = db.execute(
        "SELECT r.name, r.created, r.meta, COUNT(s.id), MIN(s.epoch), MAX(s.epoch), MAX(s.global_step)"
        " FROM runs r LEFT JOIN snapshots s ON s.run_id = r.id GROUP BY r.id ORDER BY r.id"
    ).fetchall()
    return [RunInfo(n, c, json.loads(m), k, e0, e1, s1) for n, c, m, k, e0, e1, s1 in rows]


def snapshot_infos(
    db: sqlite3.Connection, path: Path, run: str, method: str | None, probe_fingerprint: str | None = None
) -> list[SnapshotInfo]:
    """A run's snapshots (of a ``method``, a probe, if given), by step, then id; an unknown run raises."""
    if db.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
        names = [r[0] for r in db.execute("SELECT name FROM runs ORDER BY id")]
        raise ValueError(expected("run", f"the name of a run in {path}: {listing(names)}", run))
    query = f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots s JOIN runs r ON r.id = s.run_id WHERE r.name = ?"
    params: tuple[Any, ...] = (run,)
    if method is not None:
        query, params = query + " AND s.method = ?", (*params, method)
    if probe_fingerprint is not None:
        query, params = query + " AND s.probe_fingerprint = ?", (*params, probe_fingerprint)
    rows = db.execute(query + " ORDER BY s.global_step, s.id", params).fetchall()
    return [SnapshotInfo(*row[:-1], json.loads(row[-1])) for row in rows]


def load_arrays(db: sqlite3.Connection, info: SnapshotInfo) -> Snapshot:
    """The snapshot ``info`` with its arrays, in the order they were written."""
    rows = db.execute(
        "SELECT name, dtype, shape, scale, data FROM arrays WHERE snapshot_id = ? ORDER BY rowid", (info.id,)
    ).fetchall()
    arrays = {row[0]: torch.from_numpy(schema.decode_array(*row)) for row in rows}
    return Snapshot(info, arrays, {row[0]: row[1] for row in rows})


def pick_snapshot(
    path: Path, run: str, infos: list[SnapshotInfo], step: int | None, epoch: int | None, method: str | None
) -> SnapshotInfo:
    """The last of a run's ``infos`` at global step ``step`` (and/or ``epoch``); both ``None``: its last one."""
    chosen = select(run, infos, step, epoch, method, path)
    if chosen is None:
        which = "" if method is None else f" of method {method!r}"
        if not infos:
            raise ValueError(f"Run {run!r} of {path} has no snapshots{which}.")
        name, value, known = (
            ("step", step, [i.global_step for i in infos])
            if step is not None
            else ("epoch", epoch, [i.epoch for i in infos])
        )
        raise ValueError(
            expected(name, f"one of the {name}s of run {run!r}{which}: {listing(sorted(set(known)))}", value)
        )
    return chosen


def pick_reference(
    path: Path, run: str, infos: list[SnapshotInfo], epoch: int, method: str | None
) -> SnapshotInfo:
    """The last of a run's ``infos`` at ``epoch``, or else its last one."""
    chosen = select(run, infos, None, epoch, method, path)
    chosen = chosen or select(run, infos, None, None, method, path)
    if chosen is None:
        raise ValueError(f"Run {run!r} of {path} has no snapshots to compare against.")
    return chosen


def list_runs(db: schema.Connect, path: Path) -> list[RunInfo]:
    """:meth:`~lightning_xai.sinks.store.AttributionStore.runs`: every run, in the order they were created.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.sqlite"
        >>> conn = schema.connect(path, create=True)
        >>> list_runs(lambda: conn, path)
        []
    """
    with schema.about(path, "list its runs"):
        return run_infos(db())


def list_snapshots(
    db: schema.Connect, path: Path, run: str, method: str | None, probe_fingerprint: str | None
) -> list[SnapshotInfo]:
    """:meth:`~lightning_xai.sinks.store.AttributionStore.snapshots`: a run's snapshots, by step, then id.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.sqlite"
        >>> conn = schema.connect(path, create=True)
        >>> list_snapshots(lambda: conn, path, "a", None, None)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `run` to be the name of a run in ... [], but got 'a'.
    """
    with schema.about(path, f"list the snapshots of run {run!r}"):
        return snapshot_infos(db(), path, run, method, probe_fingerprint)


def read_snapshot(db: schema.Connect, path: Path, info: SnapshotInfo) -> Snapshot:
    """The snapshot ``info`` (a :class:`SnapshotInfo`, else a ``TypeError``) with its arrays.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.sqlite"
        >>> read_snapshot(lambda: schema.connect(path, create=True), path, "a")
        Traceback (most recent call last):
        ...
        TypeError: Expected argument `info` to be a SnapshotInfo of AttributionStore.snapshots(), but got ...
    """
    if not isinstance(info, SnapshotInfo):
        allowed = "a SnapshotInfo of AttributionStore.snapshots()"
        raise TypeError(expected("info", allowed, type(info).__name__))
    with schema.about(path, f"read the snapshot {info.id} of run {info.run!r}"):
        return load_arrays(db(), info)


def load_snapshot(
    db: schema.Connect,
    path: Path,
    run: str,
    step: int | None,
    epoch: int | None,
    method: str | None,
    probe_fingerprint: str | None,
) -> Snapshot:
    """:meth:`~lightning_xai.sinks.store.AttributionStore.load`: a run's last snapshot at ``step``/``epoch``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.sqlite"
        >>> conn = schema.connect(path, create=True)
        >>> _ = conn.execute("INSERT INTO runs (name, created, meta) VALUES ('a', '', '{}')")
        >>> load_snapshot(lambda: conn, path, "a", None, None, None, None)
        Traceback (most recent call last):
        ...
        ValueError: Run 'a' of ... has no snapshots.
    """
    infos = list_snapshots(db, path, run, method, probe_fingerprint)
    return read_snapshot(db, path, pick_snapshot(path, run, infos, step, epoch, method))


def load_reference(
    db: schema.Connect, path: Path, run: str, epoch: int, method: str | None, probe_fingerprint: str | None
) -> Snapshot:
    """:meth:`~lightning_xai.sinks.store.AttributionStore.reference_snapshot`: at ``epoch``, else the last.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.sqlite"
        >>> conn = schema.connect(path, create=True)
        >>> _ = conn.execute("INSERT INTO runs (name, created, meta) VALUES ('a', '', '{}')")
        >>> load_reference(lambda: conn, path, "a", 0, None, None)
        Traceback (most recent call last):
        ...
        ValueError: Run 'a' of ... has no snapshots to compare against.
    """
    infos = list_snapshots(db, path, run, method, probe_fingerprint)
    return read_snapshot(db, path, pick_reference(path, run, infos, epoch, method))
