"""The write side of :class:`~lightning_xai.sinks.store.AttributionStore`: argument checks, one transaction.

The store checks and encodes a snapshot's arrays first, then inserts it with its arrays in one transaction.
:func:`write_snapshot` is the store's ``write`` and :func:`create_run` its ``new_run``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning_xai.sinks.store._schema as schema
from lightning_xai._checks import check_choice, check_non_negative_int, expected
from lightning_xai.sinks.store._records import SnapshotInfo, non_empty_str, to_numpy

__all__ = ["IF_EXISTS", "check_and_encode", "claim_run", "create_run", "insert_snapshot", "write_snapshot"]


def check_and_encode(
    run: Any, arrays: Any, epoch: Any, global_step: Any, method: Any, probe_fingerprint: Any, dtype: Any
) -> list[tuple[str, str, str, float, bytes]]:
    """Check the arguments of :meth:`~lightning_xai.sinks.store.AttributionStore.write`, encode its arrays.

    Returns:
        One ``(name, dtype, shape, scale, data)`` row per array, in the order of ``arrays``.
    """
    non_empty_str("run", run)
    non_empty_str("method", method)
    non_empty_str("probe_fingerprint", probe_fingerprint)
    check_non_negative_int("epoch", epoch)
    check_non_negative_int("global_step", global_step)
    check_choice("dtype", dtype, tuple(schema.FLOAT_DTYPES))
    if not isinstance(arrays, Mapping) or not arrays or not all(isinstance(k, str) and k for k in arrays):
        raise ValueError(expected("arrays", "a non-empty dict of name -> tensor or array", arrays))
    return [schema.encode_array(k, to_numpy(k, v), dtype) for k, v in arrays.items()]


def insert_snapshot(
    db: sqlite3.Connection,
    run: str,
    rows: list[tuple[str, str, str, float, bytes]],
    *,
    epoch: int,
    global_step: int,
    method: str,
    probe_fingerprint: str,
    checkpoint: str | None,
    model_hash: str | None,
    created: str,
    meta: dict[str, Any] | None,
    run_meta: dict[str, Any] | None,
) -> SnapshotInfo:
    """Insert one snapshot and its encoded array ``rows`` in one transaction; the run is created if new.

    Readers and other processes see all of it or none of it, also when the writer is killed: any error rolls
    the transaction back and is raised again.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "INSERT OR IGNORE INTO runs (name, created, meta) VALUES (?, ?, ?)",
            (run, created, schema.dumps(run_meta)),
        )
        snapshot_id = db.execute(
            "INSERT INTO snapshots (run_id, epoch, global_step, method, probe_fingerprint,"
            " checkpoint_path, model_hash, created, meta)"
            " SELECT id, ?, ?, ?, ?, ?, ?, ?, ? FROM runs WHERE name = ?",
            (
                epoch,
                global_step,
                method,
                probe_fingerprint,
                checkpoint,
                model_hash,
                created,
                schema.dumps(meta),
                run,
            ),
        ).lastrowid
        db.executemany(
            "INSERT INTO arrays (snapshot_id, name, dtype, shape, scale, data) VALUES (?, ?, ?, ?, ?, ?)",
            [(snapshot_id, *row) for row in rows],
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
            db.execute("ROLLBACK")
        raise
    return SnapshotInfo(
        int(snapshot_id),
        run,
        epoch,
        global_step,
        method,
        probe_fingerprint,
        checkpoint,
        model_hash,
        created,
        json.loads(schema.dumps(meta)),
    )


IF_EXISTS = ("new", "append", "raise")


def claim_run(
    db: sqlite3.Connection, path: Path, run: str, if_exists: str, created: str, meta: dict[str, Any] | None
) -> str:
    """Create the run ``run``, or by ``if_exists`` another one, in one transaction; return the name it got.

    See :meth:`~lightning_xai.sinks.store.AttributionStore.new_run`. Under the write lock, so two processes
    never get the same new name.
    """
    non_empty_str("run", run)
    check_choice("if_exists", if_exists, IF_EXISTS)

    def taken(name: str) -> bool:
        return db.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone() is not None

    db.execute("BEGIN IMMEDIATE")
    try:
        name = run
        if if_exists != "append" and taken(run):
            if if_exists == "raise":
                allowed = (
                    f"the name of a run not yet in {path} (if_exists='raise'; if_exists='new' starts "
                    f"'{run}#2' instead, if_exists='append' continues it)"
                )
                raise ValueError(expected("run", allowed, run))
            number = 2
            while taken(f"{run}#{number}"):
                number += 1
            name = f"{run}#{number}"
        db.execute(
            "INSERT OR IGNORE INTO runs (name, created, meta) VALUES (?, ?, ?)",
            (name, created, schema.dumps(meta)),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return name


def create_run(db: schema.Connect, path: Path, run: str, if_exists: str, meta: dict[str, Any] | None) -> str:
    """:meth:`~lightning_xai.sinks.store.AttributionStore.new_run`: :func:`claim_run` on the store's
    connection (``db()``), ``if_exists`` checked first, SQLite and OS errors naming ``path``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.sqlite"
        >>> conn = schema.connect(path, create=True)
        >>> create_run(lambda: conn, path, "a", "new", None), create_run(lambda: conn, path, "a", "new", None)
        ('a', 'a#2')
    """
    check_choice("if_exists", if_exists, IF_EXISTS)
    with schema.about(path, f"create the run {run!r}"):
        return claim_run(db(), path, run, if_exists, _now(), meta)


def write_snapshot(
    db: schema.Connect,
    path: Path,
    run: str,
    arrays: Any,
    *,
    epoch: int,
    global_step: int,
    method: str,
    probe_fingerprint: str,
    checkpoint_path: str | os.PathLike[str] | None,
    model_hash: str | None,
    meta: dict[str, Any] | None,
    run_meta: dict[str, Any] | None,
    dtype: str,
) -> SnapshotInfo:
    """:meth:`~lightning_xai.sinks.store.AttributionStore.write`: :func:`check_and_encode`, then
    :func:`insert_snapshot` on the store's connection (``db()``), SQLite and OS errors naming ``path``.

    Example:
        >>> import tempfile, torch
        >>> path = Path(tempfile.mkdtemp()) / "s.sqlite"
        >>> conn = schema.connect(path, create=True)
        >>> info = write_snapshot(lambda: conn, path, "a", {"m": torch.ones(2)}, epoch=0, global_step=3,
        ...                       method="m", probe_fingerprint="f", checkpoint_path=None, model_hash=None,
        ...                       meta=None, run_meta=None, dtype="float16")
        >>> info.run, info.global_step, info.meta
        ('a', 3, {})
    """
    rows = check_and_encode(run, arrays, epoch, global_step, method, probe_fingerprint, dtype)
    checkpoint = None if checkpoint_path is None else str(checkpoint_path)
    with schema.about(path, f"write the snapshot of run {run!r} at global step {global_step}"):
        return insert_snapshot(
            db(),
            run,
            rows,
            epoch=epoch,
            global_step=global_step,
            method=method,
            probe_fingerprint=probe_fingerprint,
            checkpoint=checkpoint,
            model_hash=model_hash,
            created=_now(),
            meta=meta,
            run_meta=run_meta,
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")  # noqa: UP017  (3.10: no UTC)
