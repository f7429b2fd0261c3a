"""Drift metrics between two snapshots of an :class:`~lightning_xai.sinks.store.AttributionStore`.

:func:`compare_stored` is the store's ``compare``: snapshots or ``(run, step)`` pairs; errors name the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.sinks.store._records import Snapshot

__all__ = ["compare_snapshots", "compare_stored"]


def compare_snapshots(
    a: Snapshot, b: Snapshot, key: str | None, metric_options: dict[str, Any]
) -> dict[str, Tensor]:
    """Drift metrics of ``b`` against the reference ``a``: of array ``key``, or of every floating array.

    Raises ``ValueError`` if the probe fingerprints differ or an array is missing (see
    :meth:`~lightning_xai.sinks.store.AttributionStore.compare`).
    """
    from lightning_xai.functional.drift import drift_metrics  # loaded only when comparing

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
        raise ValueError(
            f"Snapshots hold different arrays ({sorted(a.arrays)} and {sorted(b.arrays)}): "
            "pass `key` to compare one of them."
        )
    out: dict[str, Tensor] = {}
    for name in sorted(a.arrays):
        if a.arrays[name].is_floating_point():
            metrics = drift_metrics(a.arrays[name], b.arrays[name], **metric_options)
            out.update({f"{name}/{metric}": value for metric, value in metrics.items()})
    return out


def compare_stored(
    path: Path,
    a: Any,
    b: Any,
    key: str | None,
    metric_options: dict[str, Any],
    load: Callable[[str, int | None], Snapshot],
) -> dict[str, Tensor]:
    """:meth:`~lightning_xai.sinks.store.AttributionStore.compare`: ``a`` and ``b`` (snapshots, or ``(run,
    step)`` pairs that ``load`` loads) compared; a ``ValueError`` that does not name the store's ``path`` gets
    it appended.

    Example:
        >>> import torch
        >>> from lightning_xai.sinks.store._records import SnapshotInfo
        >>> info = SnapshotInfo(1, "a", 0, 5, "m", "f", None, None, "", {})
        >>> snap = Snapshot(info, {"m": torch.ones(1, 2, 2)})
        >>> compare_stored(Path("s.sqlite"), snap, ("a", 5), "m", {}, load=lambda run, step: snap)["cosine"]
        tensor([1.])
        >>> compare_stored(Path("s.sqlite"), snap, snap, "x", {}, load=lambda run, step: snap)
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `key` to be an array of snapshot `a`: ... (AttributionStore s.sqlite)
    """
    first, second = _as_snapshot("a", a, load), _as_snapshot("b", b, load)
    try:
        return compare_snapshots(first, second, key, metric_options)
    except ValueError as err:  # say which store the snapshots are from
        if str(path) in str(err):
            raise
        raise ValueError(f"{err} (AttributionStore {path})") from err


def _as_snapshot(name: str, value: Any, load: Callable[[str, int | None], Snapshot]) -> Snapshot:
    if isinstance(value, Snapshot):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return load(value[0], value[1])
    raise TypeError(expected(name, "a Snapshot or a (run, step) pair", value))
