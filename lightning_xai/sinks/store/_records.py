"""Records an :class:`~lightning_xai.sinks.store.AttributionStore` returns (runs, snapshots), and helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_xai._checks import expected

__all__ = ["RunInfo", "Snapshot", "SnapshotInfo"]


@dataclass(frozen=True)
class RunInfo:
    """One run of a store: its name, creation time (ISO 8601, UTC), metadata, and what it holds."""

    name: str
    created: str
    meta: dict[str, Any]
    num_snapshots: int
    first_epoch: int | None
    last_epoch: int | None
    last_step: int | None


@dataclass(frozen=True)
class SnapshotInfo:
    """What describes a snapshot, without its arrays. ``id`` is unique in the store."""

    id: int
    run: str
    epoch: int
    global_step: int
    method: str
    probe_fingerprint: str
    checkpoint_path: str | None
    model_hash: str | None
    created: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """A loaded snapshot: its ``info``, its ``arrays`` and their stored ``dtypes`` (numpy strings, ``'<f2'``).

    Floating arrays come back as float32 tensors, whatever they were stored as; integer and bool arrays as
    stored.
    """

    info: SnapshotInfo
    arrays: dict[str, Tensor]
    dtypes: dict[str, str] = field(default_factory=dict)


def listing(values: list[Any], limit: int = 20) -> str:
    """``[a, b, ...]`` for error messages, shortened in the middle when long."""
    if len(values) <= limit:
        return repr(values)
    head, tail = values[: limit // 2], values[-limit // 2 :]
    return f"[{', '.join(map(repr, head))}, ..., {', '.join(map(repr, tail))}]"


def to_numpy(name: str, value: Any) -> np.ndarray:
    """A tensor (any device; bfloat16 as float32) or array as a numpy array."""
    if isinstance(value, Tensor):
        value = value.detach().to("cpu")
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(expected(f"arrays[{name!r}]", "a torch.Tensor or numpy.ndarray", type(value).__name__))


def non_empty_str(name: str, value: Any) -> str:
    """``value`` if it is a string with something besides white space in it, else a ``ValueError``."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(expected(name, "a non-empty string (not only white space)", value))
    return value


def select(
    run: str,
    infos: list[SnapshotInfo],
    step: int | None,
    epoch: int | None,
    method: str | None,
    where: object = None,
) -> SnapshotInfo | None:
    """The last of ``infos`` (ordered by step, id) at ``step``/``epoch``, or None.

    Several snapshots of different methods at the chosen step and no ``method`` named: a ``ValueError``.
    """
    hits = [
        i for i in infos if (step is None or i.global_step == step) and (epoch is None or i.epoch == epoch)
    ]
    if not hits:
        return None
    tied = [i for i in hits if i.global_step == hits[-1].global_step]
    methods = sorted({i.method for i in tied})
    if method is None and len(methods) > 1:
        of = "" if where is None else f" of {where}"
        raise ValueError(
            f"Run {run!r}{of} has snapshots of several methods at global step {tied[-1].global_step} "
            f"({methods}): pass `method` to choose one."
        )
    return tied[-1]
