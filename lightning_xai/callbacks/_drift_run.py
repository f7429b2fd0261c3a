"""Where an AttributionDriftCallback writes: its store (checked in ``setup``) and its run (named at the start).

A new fit never continues a run another training wrote: the run name is claimed in the store when the callback
starts to work (after Lightning restored the callback state), by ``if_exists``. A resumed fit, or a ``validate``
of a checkpoint, restores the name of the run that wrote the checkpoint and appends to it. Under
``fast_dev_run`` the snapshots go to a throwaway store, removed at teardown. Rank zero opens the store and
claims the name; the other ranks get its answer (or its error) by broadcast.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from lightning_xai._checks import expected

if TYPE_CHECKING:
    from lightning_xai.sinks.store import AttributionStore

__all__ = ["FAST_DEV_RUN", "DriftRun"]

#: The run name under ``fast_dev_run``, in a throwaway store.
FAST_DEV_RUN = "fast_dev_run"
_OWNER = "AttributionDriftCallback"  # state keys of drift callbacks in a checkpoint start with it


class DriftRun:
    """The store and run of one AttributionDriftCallback.

    Args:
        requested: the ``run`` given to the callback (``None``: named after the logger).
        if_exists: what a new fit does when that run is already in the store: ``"new"``, ``"append"``,
            ``"raise"`` (see :meth:`~lightning_xai.sinks.store.AttributionStore.new_run`).

    Example:
        >>> target = DriftRun("resnet-v2", "new")
        >>> target.restore({"run": "resnet-v2#2", "requested": "resnet-v2"}); target.name
        'resnet-v2#2'
    """

    def __init__(self, requested: str | None, if_exists: str) -> None:
        self.requested = requested
        self.if_exists = if_exists
        self.name: str | None = None  # the run written to: restored, or claimed at the start
        self.store: AttributionStore | None = None  # rank zero, between setup and teardown
        self.throwaway: str | None = None  # fast_dev_run: the temporary folder of the store
        self.other_probe_noted: set[str] = set()  # runs already told about snapshots of another probe

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {"run": None if self.throwaway else self.name, "requested": self.requested}

    def restore(self, state: dict[str, Any]) -> None:
        """Take the run name of a checkpoint's state when it is the run asked for (a resume, an audit)."""
        name = state.get("run")
        if isinstance(name, str) and name.strip() and (
                self.requested is None or self.requested in (name, state.get("requested", name))):
            self.name = name

    def adopt(self, checkpoint: dict[str, Any]) -> None:
        """An explicitly named run that wrote this checkpoint (under another callback state key) is continued."""
        if self.requested is None:
            return
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if isinstance(key, str) and key.startswith(_OWNER) and isinstance(state, dict):
                self.restore(state)
                if self.name is not None:
                    return

    # ------------------------------------------------------------------ setup: the store
    def open(self, trainer: pl.Trainer, store_path: str) -> None:
        """Rank zero opens the store (a throwaway one under fast_dev_run) and checks it; every rank raises."""
        error: Exception | None = None
        if trainer.is_global_zero and self.store is None:
            try:
                self.store = self._open(trainer, store_path)
            except Exception as err:  # noqa: BLE001  (sent to every rank, raised below)
                error = err
        message = trainer.strategy.broadcast(None if error is None else str(error), src=0)
        if message is not None:
            allowed = "the path of an AttributionStore, or of a new file in a writable folder"
            raise ValueError(f"{expected('store', allowed, store_path)} {message}") from error

    def _open(self, trainer: pl.Trainer, store_path: str) -> AttributionStore:
        from lightning_xai.sinks.store import AttributionStore

        if not trainer.fast_dev_run:
            return AttributionStore(store_path)
        if os.path.exists(store_path):  # checked as in a real run, but only read
            AttributionStore(store_path, create=False).close()
        self.throwaway = tempfile.mkdtemp(prefix="lightning_xai_fast_dev_run_")
        path = os.path.join(self.throwaway, "xai_store.sqlite")
        rank_zero_warn(
            f"lightning_xai: fast_dev_run: AttributionDriftCallback writes its snapshots to the throwaway store "
            f"{path} as the run {FAST_DEV_RUN!r} (removed when the run ends); the store {store_path} is not "
            "touched.",
            category=UserWarning,
        )
        return AttributionStore(path)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.throwaway is not None:
            shutil.rmtree(self.throwaway, ignore_errors=True)
            self.throwaway, self.name = None, None

    # ------------------------------------------------------------------ the run name
    def decide(self, trainer: pl.Trainer, meta: dict[str, Any]) -> None:
        """Name the run, once, on rank zero (claimed in the store by ``if_exists``); the other ranks receive it."""
        if self.name is not None:
            return
        name, error = None, None
        if trainer.is_global_zero:
            try:
                name = self._claim(trainer, meta)
            except Exception as err:  # noqa: BLE001  (sent to every rank, raised below)
                error = err
        name, message = trainer.strategy.broadcast((name, None if error is None else str(error)), src=0)
        if error is not None:
            raise error
        if message is not None:
            raise ValueError(message)
        self.name = name

    def _claim(self, trainer: pl.Trainer, meta: dict[str, Any]) -> str:
        if self.store is None:
            raise ValueError("lightning_xai: AttributionDriftCallback has no open store (was `setup` called?).")
        if self.throwaway is not None:
            return self.store.new_run(FAST_DEV_RUN, if_exists="append", meta=meta)
        wanted = self.requested or default_run_name(trainer)
        name = self.store.new_run(wanted, if_exists=self.if_exists, meta=meta)  # type: ignore[arg-type]
        if name != wanted:
            rank_zero_warn(
                f"lightning_xai: AttributionDriftCallback: the run {wanted!r} is already in {self.store.path} (another "
                f"training); this one writes to the new run {name!r} (if_exists='new'), so that it is never compared "
                "with the other as its own past. Resume from a checkpoint of that run (ckpt_path=...) to continue it, "
                "or pass if_exists='append'.",
                category=UserWarning,
            )
        return name


def default_run_name(trainer: pl.Trainer) -> str:
    """``<logger name>/version_<n>``, or the root folder's name without a logger (never empty).

    Example:
        >>> from lightning.pytorch import Trainer
        >>> default_run_name(Trainer(logger=False, default_root_dir="runs/exp-1"))
        'exp-1'
    """
    logger = trainer.logger
    parts: list[str] = []
    if logger is not None:
        version = getattr(logger, "version", None)
        version = version if isinstance(version, str) else (None if version is None else f"version_{version}")
        parts = [str(p) for p in (logger.name, version) if p is not None and str(p).strip()]
    if not parts:
        parts = [os.path.basename(os.path.abspath(trainer.default_root_dir))]
    return "/".join(parts) if "".join(parts).strip() else "run"
