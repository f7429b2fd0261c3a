"""Drift metrics between two snapshots of an :class:`~lightning_xai.sinks.store.AttributionStore`."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.sinks.store._records import Snapshot

__all__: list[str] = []


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
