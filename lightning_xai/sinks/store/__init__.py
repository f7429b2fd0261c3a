"""AttributionStore: the attribution maps of many runs and epochs in one SQLite file, to compare them later.

Every snapshot (the arrays one explanation of the probe set produced, with its run, epoch, global step,
method, probe fingerprint, checkpoint and model hash) is written in one short transaction: readers and other
processes see all of it or none of it, also when the writer is killed. The file is in WAL mode with a 30 s
busy timeout, so several processes (runs training side by side, an audit) can open it at the same time.
Arrays are raw little-endian bytes, float16 by default: 64 maps of 224 x 224 take 6.4 MB. Nothing is
pickled. Every SQLite or OS error (a read-only folder, a full disk) is raised again, of the same type, naming
the store's path.

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

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor

import lightning_xai.sinks.store._read as read
import lightning_xai.sinks.store._schema as schema
from lightning_xai.sinks.store._compare import compare_stored
from lightning_xai.sinks.store._read import _SNAPSHOT_COLUMNS  # noqa: F401  (re-exported, as before)
from lightning_xai.sinks.store._records import RunInfo, Snapshot, SnapshotInfo
from lightning_xai.sinks.store._records import listing, non_empty_str, select, to_numpy  # noqa: F401  (as before)
from lightning_xai.sinks.store._write import create_run, write_snapshot

__all__ = ["AttributionStore", "RunInfo", "Snapshot", "SnapshotInfo"]


class AttributionStore:
    """Attribution snapshots of many runs in one SQLite file (see the module docstring).

    Args:
        path: The store's file. A missing file is created (with its folders); an existing file must be a
            store.
        create: If False, a missing file raises ``FileNotFoundError`` instead.

    Raises:
        ValueError: If ``path`` holds anything but a store (another file, another SQLite database), or a store
            of a newer schema than this lightning_xai reads. The file is left exactly as it was.
        sqlite3.OperationalError, OSError: If the file cannot be opened or created (a read-only or missing
            folder, a path under a file); the message names ``path``.

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
        return write_snapshot(
            self._db,
            self._path,
            run,
            arrays,
            epoch=epoch,
            global_step=global_step,
            method=method,
            probe_fingerprint=probe_fingerprint,
            checkpoint_path=checkpoint_path,
            model_hash=model_hash,
            meta=meta,
            run_meta=run_meta,
            dtype=dtype,
        )

    def new_run(
        self,
        run: str,
        *,
        if_exists: Literal["new", "append", "raise"] = "new",
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Create the run ``run`` (with ``meta``), unless it exists; return the name of the run to write to.

        Args:
            run: The name asked for.
            if_exists: If the store already holds a run of that name: ``"new"`` creates ``<run>#2`` (``#3``,
                ...) instead, ``"append"`` returns ``run`` (new snapshots continue it), ``"raise"`` raises.
            meta: JSON-able details of the run (kept from its creation).

        Raises:
            ValueError: With ``if_exists="raise"``, if the run exists.

        One transaction under the write lock: two processes asking for one name never get the same new one.

        Example:
            >>> import tempfile, pathlib
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> store.new_run("resnet"), store.new_run("resnet"), store.new_run("resnet", if_exists="append")
            ('resnet', 'resnet#2', 'resnet')
        """
        return create_run(self._db, self._path, run, if_exists, meta)

    def runs(self) -> list[RunInfo]:
        """Every run, in the order they were created.

        Example:
            >>> import tempfile, pathlib
            >>> AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite").runs()
            []
        """
        return read.list_runs(self._db, self._path)

    def snapshots(
        self, run: str, *, method: str | None = None, probe_fingerprint: str | None = None
    ) -> list[SnapshotInfo]:
        """A run's snapshots (of one ``method``, of one probe, if given), ordered by global step, then by id.

        The id orders them as they were written.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> for step in (20, 10):
            ...     _ = store.write("a", {"m": torch.ones(1, 2)}, epoch=step // 10, global_step=step,
            ...                     method="m", probe_fingerprint="f")
            >>> [s.global_step for s in store.snapshots("a")]
            [10, 20]
        """
        return read.list_snapshots(self._db, self._path, run, method, probe_fingerprint)

    def load(
        self,
        run: str,
        step: int | None = None,
        *,
        epoch: int | None = None,
        method: str | None = None,
        probe_fingerprint: str | None = None,
    ) -> Snapshot:
        """Load a run's snapshot at global step ``step`` (and/or ``epoch``); ``None``: its last one.

        Of several snapshots that match, the last written is taken; if they are of different methods, pass
        ``method``; ``probe_fingerprint`` keeps those of one probe. A run or step that is not there raises a
        ``ValueError`` listing what is.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> _ = store.write("a", {"m": torch.ones(2, 3)}, epoch=0, global_step=7, method="m",
            ...                 probe_fingerprint="f")
            >>> snap = store.load("a")
            >>> snap.info.global_step, snap.arrays["m"].shape, snap.arrays["m"].dtype, snap.dtypes["m"]
            (7, torch.Size([2, 3]), torch.float32, '<f2')
        """
        return read.load_snapshot(self._db, self._path, run, step, epoch, method, probe_fingerprint)

    def load_snapshot(self, info: SnapshotInfo) -> Snapshot:
        """The snapshot ``info`` (one of :meth:`snapshots`) with its arrays.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> for fingerprint in ("probe-a", "probe-b"):  # two snapshots at one step: load picks the last
            ...     _ = store.write("a", {"m": torch.ones(1, 2)}, epoch=0, global_step=5, method="m",
            ...                     probe_fingerprint=fingerprint)
            >>> first = store.snapshots("a")[0]
            >>> store.load_snapshot(first).info.probe_fingerprint
            'probe-a'
        """
        return read.read_snapshot(self._db, self._path, info)

    def reference_snapshot(
        self, run: str, epoch: int, *, method: str | None = None, probe_fingerprint: str | None = None
    ) -> Snapshot:
        """The run's last snapshot at ``epoch``, or else its last one: what to compare a new epoch against.

        ``method`` and ``probe_fingerprint`` keep the snapshots of one method and one probe.

        Example:
            >>> import tempfile, pathlib, torch
            >>> store = AttributionStore(pathlib.Path(tempfile.mkdtemp()) / "s.sqlite")
            >>> _ = store.write("ref", {"m": torch.ones(1, 2)}, epoch=3, global_step=30, method="m",
            ...                 probe_fingerprint="f")
            >>> store.reference_snapshot("ref", epoch=9).info.epoch  # no epoch 9: its last snapshot
            3
        """
        return read.load_reference(self._db, self._path, run, epoch, method, probe_fingerprint)

    def compare(
        self,
        a: Snapshot | tuple[str, int | None],
        b: Snapshot | tuple[str, int | None],
        *,
        key: str | None = None,
        **metric_options: Any,
    ) -> dict[str, Tensor]:
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
        return compare_stored(self._path, a, b, key, metric_options, self.load)

    def close(self) -> None:
        """Close the connection (idempotent); the last one to close folds the WAL back into the file."""
        conn, self._conn = self._conn, None
        if conn is not None and os.getpid() == self._pid:
            with schema.about(self._path, "close the store"):
                conn.close()

    def __enter__(self) -> AttributionStore:  # noqa: PYI034  (typing.Self is Python 3.11+)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AttributionStore({str(self._path)!r})"
