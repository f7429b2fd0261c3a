"""AttributionStore: the attribution maps of many runs and epochs in one SQLite file, to compare them later.

Every snapshot (the arrays one explanation of the probe set produced, with its run, epoch, global step,
method, probe fingerprint, checkpoint and model hash) is written in one short transaction: readers and other
processes see all of it or none of it, also when the writer is killed. The file is in WAL mode with a 30 s
busy timeout, so several processes (runs training side by side, an audit) can open it at the same time.
Arrays are raw little-endian bytes, float16 by default: 64 maps of 224 x 224 take 6.4 MB. Nothing is
pickled.

Example:
    >>> import tempfile, pathlib, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "attributions.sqlite"
    >>> maps = torch.rand(4, 8, 8)
    >>> with AttributionStore(path) as store:
    ...     _ = store.write("baseline", {"gradcam": maps}, epoch=0, global_step=10, method="gradcam",
    ...                     probe_fingerprint="f00d")
    ...     _ = store.write("baseline", {"gradcam": maps}, epoch=1, global_step=20, method="gradcam",
    ...                     probe_fingerprint="f00d")
    ...     store.compare(("baseline", 10), ("baseline", 20), key="gradcam")["spearman"]
    tensor([1., 1., 1., 1.])
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lightning_xai._checks import check_choice, check_non_negative_int, expected
from lightning_xai.sinks import _store_schema as schema
from lightning_xai.sinks._store_records import (
    RunInfo,
    Snapshot,
    SnapshotInfo,
    listing,
    non_empty_str,
    select,
    to_numpy,
)

__all__ = ["AttributionStore", "RunInfo", "Snapshot", "SnapshotInfo"]

_SNAPSHOT_COLUMNS = (
    "s.id, r.name, s.epoch, s.global_step, s.method, s.probe_fingerprint, s.checkpoint_path, s.model_hash,"
    " s.created, s.meta"
)


class AttributionStore:
    """Attribution snapshots of many runs in one SQLite file (see the module docstring).

    Args:
        path: The store's file. A missing file is created (with its folders); an existing file must be a
            store.
        create: If False, a missing file raises ``FileNotFoundError`` instead.

    Raises:
        ValueError: If ``path`` holds anything but a store (another file, another SQLite database), or a store
            of a newer schema than this lightning_xai reads. The file is left exactly as it was.

    One store object per process: after a ``fork`` the child opens its own connection on first use.
    """

    def __init__(self, path: str | os.PathLike[str], create: bool = True) -> None:
        self._path = Path(path)
        self._conn: sqlite3.Connection | None = schema.connect(self._path, create)
        self._pid = os.getpid()

    @property
    def path(self) -> Path:
        """The store's file."""
        return self._path

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"The AttributionStore at {self._path} is closed.")
        if os.getpid() != self._pid:  # forked: never share a connection across processes
            self._conn, self._pid = schema.connect(self._path, create=False), os.getpid()
        return self._conn

    def write(
        self,
        run: str,
        arrays: Mapping[str, Tensor | np.ndarray],
        *,
        epoch: int,
        global_step: int,
        method: str,
        probe_fingerprint: str,
        checkpoint_path: str | os.PathLike[str] | None = None,
        model_hash: str | None = None,
        meta: dict[str, Any] | None = None,
        run_meta: dict[str, Any] | None = None,
        dtype: Literal["float16", "float32"] = "float16",
    ) -> SnapshotInfo:
        """Store one snapshot, all its arrays in one transaction; the run is created on its first snapshot.

        Args:
            run: Run name (any string; one store holds many runs).
            arrays: Name -> attributions, e.g. ``{"gradcam": maps}``; floating arrays are stored as ``dtype``,
                integer and bool arrays exactly. Shapes and dtypes are kept.
            epoch, global_step: Where in training the snapshot was taken.
            method: The explanation method (``"gradcam"``, ``"shap"``, ...).
            probe_fingerprint: Identifies the probe inputs
                (:func:`lightning_xai.functional._fingerprint.tensor_fingerprint`); :meth:`compare` refuses to
                compare snapshots of different probes.
            checkpoint_path, model_hash: The checkpoint and weights the maps came from, if known.
            meta: JSON-able details of the snapshot; ``run_meta`` those of the run (used when it is created).
            dtype: ``"float16"`` (default; relative precision 2^-11) or ``"float32"``.

        Returns:
            The stored snapshot's :class:`SnapshotInfo`.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> info = store.write("run-a", {"gradcam": torch.rand(2, 4, 4)}, epoch=0, global_step=5,
            ...                    method="gradcam", probe_fingerprint="f00d")
            >>> info.run, info.global_step
            ('run-a', 5)
        """
        non_empty_str("run", run)
        non_empty_str("method", method)
        non_empty_str("probe_fingerprint", probe_fingerprint)
        check_non_negative_int("epoch", epoch)
        check_non_negative_int("global_step", global_step)
        check_choice("dtype", dtype, tuple(schema.FLOAT_DTYPES))
        if not isinstance(arrays, Mapping) or not arrays or not all(isinstance(k, str) and k for k in arrays):
            raise ValueError(expected("arrays", "a non-empty dict of name -> tensor or array", arrays))
        rows = [schema.encode_array(k, to_numpy(k, v), dtype) for k, v in arrays.items()]
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        checkpoint = None if checkpoint_path is None else str(checkpoint_path)
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT OR IGNORE INTO runs (name, created, meta) VALUES (?, ?, ?)",
                       (run, created, schema.dumps(run_meta)))
            snapshot_id = db.execute(
                "INSERT INTO snapshots (run_id, epoch, global_step, method, probe_fingerprint,"
                " checkpoint_path, model_hash, created, meta)"
                " SELECT id, ?, ?, ?, ?, ?, ?, ?, ? FROM runs WHERE name = ?",
                (epoch, global_step, method, probe_fingerprint, checkpoint, model_hash, created,
                 schema.dumps(meta), run),
            ).lastrowid
            db.executemany("INSERT INTO arrays (snapshot_id, name, dtype, shape, scale, data)"
                           " VALUES (?, ?, ?, ?, ?, ?)", [(snapshot_id, *row) for row in rows])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
                db.execute("ROLLBACK")
            raise
        return SnapshotInfo(int(snapshot_id), run, epoch, global_step, method, probe_fingerprint, checkpoint,
                            model_hash, created, json.loads(schema.dumps(meta)))

    def runs(self) -> list[RunInfo]:
        """Every run, in the order they were created.

        Example:
            >>> import tempfile, pathlib
            >>> AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite").runs()
            []
        """
        rows = self._db().execute(
            "SELECT r.name, r.created, r.meta, COUNT(s.id), MIN(s.epoch), MAX(s.epoch), MAX(s.global_step)"
            " FROM runs r LEFT JOIN snapshots s ON s.run_id = r.id GROUP BY r.id ORDER BY r.id"
        ).fetchall()
        return [RunInfo(n, c, json.loads(m), k, e0, e1, s1) for n, c, m, k, e0, e1, s1 in rows]

    def snapshots(self, run: str, *, method: str | None = None) -> list[SnapshotInfo]:
        """A run's snapshots (of one ``method``, if given), ordered by global step, then by id (write order).

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> for step in (20, 10):
            ...     _ = store.write("a", {"m": torch.ones(1, 2)}, epoch=step // 10, global_step=step,
            ...                     method="m", probe_fingerprint="f")
            >>> [s.global_step for s in store.snapshots("a")]
            [10, 20]
        """
        db = self._db()
        if db.execute("SELECT 1 FROM runs WHERE name = ?", (run,)).fetchone() is None:
            names = [r[0] for r in db.execute("SELECT name FROM runs ORDER BY id")]
            raise ValueError(expected("run", f"the name of a run in {self._path}: {listing(names)}", run))
        query = f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots s JOIN runs r ON r.id = s.run_id WHERE r.name = ?"
        params: tuple[Any, ...] = (run,)
        if method is not None:
            query, params = query + " AND s.method = ?", (run, method)
        rows = db.execute(query + " ORDER BY s.global_step, s.id", params).fetchall()
        return [SnapshotInfo(*row[:-1], json.loads(row[-1])) for row in rows]

    def load(self, run: str, step: int | None = None, *, epoch: int | None = None,
             method: str | None = None) -> Snapshot:
        """Load a run's snapshot at global step ``step`` (and/or ``epoch``); ``None``: its last one.

        Of several snapshots that match, the last written is taken; if they are of different methods, pass
        ``method``. A run or step that is not there raises a ``ValueError`` listing what is.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> _ = store.write("a", {"m": torch.ones(2, 3)}, epoch=0, global_step=7, method="m",
            ...                 probe_fingerprint="f")
            >>> snap = store.load("a")
            >>> snap.info.global_step, snap.arrays["m"].shape, snap.arrays["m"].dtype, snap.dtypes["m"]
            (7, torch.Size([2, 3]), torch.float32, '<f2')
        """
        infos = self.snapshots(run, method=method)
        chosen = select(run, infos, step, epoch, method)
        if chosen is None:
            which = "" if method is None else f" of method {method!r}"
            if not infos:
                raise ValueError(f"Run {run!r} of {self._path} has no snapshots{which}.")
            name, value, known = ("step", step, [i.global_step for i in infos]) if step is not None else (
                "epoch", epoch, [i.epoch for i in infos])
            raise ValueError(expected(name, f"one of the {name}s of run {run!r}{which}: "
                                      f"{listing(sorted(set(known)))}", value))
        return self._load_arrays(chosen)

    def reference_snapshot(self, run: str, epoch: int, *, method: str | None = None) -> Snapshot:
        """The run's last snapshot at ``epoch``, or else its last one: what to compare a new epoch against.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> _ = store.write("ref", {"m": torch.ones(1, 2)}, epoch=3, global_step=30, method="m",
            ...                 probe_fingerprint="f")
            >>> store.reference_snapshot("ref", epoch=9).info.epoch  # no epoch 9: its last snapshot
            3
        """
        infos = self.snapshots(run, method=method)
        chosen = select(run, infos, None, epoch, method) or select(run, infos, None, None, method)
        if chosen is None:
            raise ValueError(f"Run {run!r} of {self._path} has no snapshots to compare against.")
        return self._load_arrays(chosen)

    def compare(self, a: Snapshot | tuple[str, int | None], b: Snapshot | tuple[str, int | None], *,
                key: str | None = None, **metric_options: Any) -> dict[str, Tensor]:
        """Drift metrics between two snapshots of the same probes: ``a`` is the reference.

        Args:
            a, b: :class:`Snapshot` objects or ``(run, step)`` pairs (``step`` ``None``: the run's last).
            key: The array to compare: the result is ``{metric: (B,)}``. ``None``: every floating array (both
                snapshots must hold the same names), as ``{"<array>/<metric>": (B,)}``.
            **metric_options: Passed to :func:`lightning_xai.functional.drift.drift_metrics` (``kind``,
                ``k_fraction``, ``top_tokens``, ``keep``, ``ndcg_k``).

        Raises:
            ValueError: If the probe fingerprints differ, or an array is missing.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> _ = store.write("a", {"m": torch.rand(2, 4, 4)}, epoch=0, global_step=1, method="m",
            ...                 probe_fingerprint="f")
            >>> sorted(store.compare(("a", 1), ("a", None)))[:2]
            ['m/com_shift', 'm/cosine']
        """
        from lightning_xai.functional.drift import drift_metrics  # loaded only when comparing

        a, b = self._as_snapshot("a", a), self._as_snapshot("b", b)
        if a.info.probe_fingerprint != b.info.probe_fingerprint:
            raise ValueError(
                "Cannot compare snapshots of different probe sets: "
                f"{a.info.run!r} step {a.info.global_step} has probe fingerprint "
                f"{a.info.probe_fingerprint!r}, {b.info.run!r} step {b.info.global_step} has "
                f"{b.info.probe_fingerprint!r}."
            )
        if key is not None:
            for name, snap in (("a", a), ("b", b)):
                if key not in snap.arrays:
                    allowed = f"an array of snapshot `{name}`: {sorted(snap.arrays)}"
                    raise ValueError(expected("key", allowed, key))
            return drift_metrics(a.arrays[key], b.arrays[key], **metric_options)
        if set(a.arrays) != set(b.arrays):
            raise ValueError(f"Snapshots hold different arrays ({sorted(a.arrays)} and {sorted(b.arrays)}): "
                             "pass `key` to compare one of them.")
        out: dict[str, Tensor] = {}
        for name in sorted(a.arrays):
            if a.arrays[name].is_floating_point():
                metrics = drift_metrics(a.arrays[name], b.arrays[name], **metric_options)
                out.update({f"{name}/{metric}": value for metric, value in metrics.items()})
        return out

    def close(self) -> None:
        """Close the connection (idempotent); the last one to close folds the WAL back into the file."""
        if self._conn is not None and os.getpid() == self._pid:
            self._conn.close()
        self._conn = None

    def __enter__(self) -> AttributionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AttributionStore({str(self._path)!r})"

    def _load_arrays(self, info: SnapshotInfo) -> Snapshot:
        rows = self._db().execute("SELECT name, dtype, shape, scale, data FROM arrays WHERE snapshot_id = ?"
                                  " ORDER BY rowid", (info.id,)).fetchall()
        arrays = {row[0]: torch.from_numpy(schema.decode_array(*row)) for row in rows}
        return Snapshot(info, arrays, {row[0]: row[1] for row in rows})

    def _as_snapshot(self, name: str, value: Any) -> Snapshot:
        if isinstance(value, Snapshot):
            return value
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            return self.load(value[0], value[1])
        raise TypeError(expected(name, "a Snapshot or a (run, step) pair", value))
