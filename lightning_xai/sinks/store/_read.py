"""The read side of :class:`~lightning_xai.sinks.store.AttributionStore`: runs, snapshots, arrays, lookups.

The SQL functions take the store's open connection. A lookup that finds nothing raises a ``ValueError``
listing what the run holds.
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

__all__: list[str] = []

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
