"""Faithfulness results to the sink: the four AUC means as scalars, the mean curves as a figure, per-sample values."""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import Tensor

from lightning_xai.explainers.faithfulness import METRICS, FaithfulnessCheck
from lightning_xai.sinks import ArtifactSink

__all__ = ["log_faithfulness"]


def log_faithfulness(
    sink: ArtifactSink, name: str, res: dict[str, Tensor] | None, check: FaithfulnessCheck
) -> dict[str, Any]:
    """Log the means of the four METRICS as ``faithfulness/<name>/<metric>`` and the mean curves as
    ``faithfulness/<name>/curves``; return the per-sample values for the summary JSON."""
    if res is None:
        return {}
    from lightning_xai.render.faithfulness import faithfulness_curves

    for metric in METRICS:
        sink.scalar(f"faithfulness/{name}/{metric}", float(res[metric].mean()))
    ev = sink.event
    title = f"Faithfulness · {ev.callback} · {name} · epoch {ev.epoch} · step {ev.global_step}"
    sink.figure(
        f"faithfulness/{name}/curves",
        partial(
            faithfulness_curves,
            res["fractions"],
            {k: res[k] for k in ("deletion", "insertion", "deletion_random", "insertion_random")},
            title=f"{title} ({check.baseline} baseline, {check.steps} steps)",
        ),
    )
    return {
        "steps": check.steps,
        "baseline": check.baseline,
        "score": "probability",
        **{m: res[m].tolist() for m in METRICS},
    }
