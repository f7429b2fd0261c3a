"""Probing results to the sink: per-layer scalars, the accuracy-by-depth and across-epochs figures, probing.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from lightning_xai.functional.probing import ProbingResult
from lightning_xai.sinks import ArtifactSink

__all__ = ["emit_probing", "target_prefix"]

History = Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]


def target_prefix(target: str) -> str:
    """Tag prefix of a target: none for the label (``xai/probing/<layer>/...``), ``<concept>/`` for a concept.

    Example:
        >>> target_prefix("label"), target_prefix("colour")
        ('', 'colour/')
    """
    return "" if target == "label" else f"{target}/"


def emit_probing(sink: ArtifactSink, results: Sequence[ProbingResult], history: History | None,
                 settings: Mapping[str, Any]) -> dict[str, Any]:
    """Log ``<prefix><layer>/{accuracy,accuracy_std,control_accuracy,selectivity}`` for every probed layer, draw the
    figures ``<prefix>accuracy_by_depth`` and (with ``history``, ``{target: {layer: [(epoch, accuracy)]}}``)
    ``<prefix>accuracy_over_epochs``, and write ``probing.json`` (``settings`` plus every target's
    :meth:`ProbingResult.summary`). Returns that JSON."""
    from lightning_xai.render.probing import accuracy_by_depth, accuracy_over_epochs

    ev = sink.event
    when = f"{ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
    for result in results:
        prefix, probes = target_prefix(result.target), result.probes
        for layer, probe in probes.items():
            sink.scalar(f"{prefix}{layer}/accuracy", probe.accuracy)
            sink.scalar(f"{prefix}{layer}/accuracy_std", probe.accuracy_std)
            if probe.has_control:
                sink.scalar(f"{prefix}{layer}/control_accuracy", probe.control_accuracy)
                sink.scalar(f"{prefix}{layer}/selectivity", probe.selectivity)
        if not probes:
            continue
        first = next(iter(probes.values()))
        what = "label" if result.target == "label" else f"concept {result.target!r}"
        title = (f"Linear probes of the {what} · {first.n_samples} samples, {first.n_classes} classes, "
                 f"{result.cv}-fold · {settings.get('pooling', '')} pooling · {when}")
        layers = list(probes)
        sink.figure(f"{prefix}accuracy_by_depth", partial(
            accuracy_by_depth, layers, [p.accuracy for p in probes.values()], [p.accuracy_std for p in probes.values()],
            [p.control_accuracy for p in probes.values()], [p.control_std for p in probes.values()], first.chance,
            title=title))
        series = (history or {}).get(result.target)
        if series:
            sink.figure(f"{prefix}accuracy_over_epochs", partial(
                accuracy_over_epochs, {layer: list(points) for layer, points in series.items()}, first.chance,
                title=f"Linear probe accuracy of the {what} per layer across epochs · {when}"))
    summary = {**settings, "targets": {r.target: r.summary() for r in results}}
    sink.json("probing", summary)
    return summary
