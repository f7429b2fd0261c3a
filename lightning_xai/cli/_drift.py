"""``lightning-xai drift``: the runs of an attribution store, their drift tables and a PNG timeline.

Also the last step of ``lightning-xai compare`` (see :mod:`lightning_xai.cli._audit`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from lightning_xai.cli._errors import UserError, open_store, write_png
from lightning_xai.cli._table import table

__all__ = ["AGAINST", "METRICS", "drift_command"]

AGAINST = ("first", "previous", "reference")
METRICS = ("spearman", "ndcg", "topk_iou", "cosine", "com_shift", "focus_radius_change", "top_token_overlap")


def _pick(metrics: dict[str, Any], metric: str, array: str | None) -> Any:
    """``metric`` of ``array`` (``"<array>/<metric>"`` keys of several explained inputs), else of the first array
    that has it; ``None`` when missing."""
    if array is not None:
        return metrics.get(f"{array}/{metric}", metrics.get(metric))
    key = next((k for k in metrics if k == metric or k.endswith("/" + metric)), None)
    return None if key is None else metrics[key]


def _mean(metrics: dict[str, Any], metric: str, array: str | None) -> float | None:
    """The mean over probes of ``metric`` in a ``store.compare`` result."""
    value = _pick(metrics, metric, array)
    return None if value is None else float(value.mean())


def drift_command(args: argparse.Namespace, out: TextIO) -> int:
    from lightning_xai.render import figure_to_png_bytes
    from lightning_xai.render.drift import ZERO_WHEN_IDENTICAL, drift_timeline

    metric = args.metric
    with open_store(args.store) as store:
        runs = store.runs()
        names = [r.name for r in runs]
        chosen = args.runs or names
        unknown = [r for r in chosen + ([args.reference] if args.reference else []) if r not in names]
        if unknown:
            raise UserError(f"runs {unknown} are not in {args.store}; it holds {names}")
        rows, series, last = [], {}, {}
        for run in chosen:
            snaps = store.snapshots(run)
            if not snaps:
                continue
            final = snaps[-1]
            last[run] = final
            drift = {a: _pick(d, metric, args.input) for a, d in final.meta.get("drift", {}).items()}
            ref_run = (final.meta.get("against", {}).get("reference", {}) or {}).get("run")
            if args.reference is not None:
                ref_run, drift["reference"] = args.reference, None
                try:
                    ref = store.reference_snapshot(args.reference, final.epoch, method=final.method)
                except ValueError as err:  # the reference run has no snapshot of this method
                    raise UserError(f"`--reference` {args.reference}: {err}") from err
                if run != args.reference and ref.info.probe_fingerprint == final.probe_fingerprint:
                    drift["reference"] = _mean(
                        store.compare(ref, (run, final.global_step)), metric, args.input
                    )
            rows.append(
                [
                    run,
                    final.method,
                    len(snaps),
                    f"{snaps[0].epoch}-{final.epoch}",
                    *(drift.get(a) for a in AGAINST),
                    ref_run,
                ]
            )
            identical = 0.0 if metric in ZERO_WHEN_IDENTICAL else 1.0
            series.setdefault(metric, {}).setdefault(f"{run} vs first", []).append(
                (snaps[0].epoch, identical)
            )
            for info in snaps:
                for against in AGAINST:
                    value = _pick(info.meta.get("drift", {}).get(against, {}), metric, args.input)
                    if value is not None and against != "previous":
                        series.setdefault(metric, {}).setdefault(f"{run} vs {against}", []).append(
                            (info.epoch, value)
                        )
        shown = f"{metric} of {args.input}" if args.input else metric
        print(f"Attribution drift in {args.store}: {shown} of each run's last snapshot\n", file=out)
        print(
            table(
                [
                    "run",
                    "method",
                    "snapshots",
                    "epochs",
                    "vs first",
                    "vs previous",
                    "vs reference",
                    "reference run",
                ],
                rows,
            ),
            file=out,
        )
        pairs = []
        for i, a in enumerate(chosen):
            for b in chosen[i + 1 :]:
                sa, sb = last.get(a), last.get(b)
                if (
                    sa is None
                    or sb is None
                    or sa.probe_fingerprint != sb.probe_fingerprint
                    or sa.method != sb.method
                ):
                    continue
                value = _mean(store.compare((a, sa.global_step), (b, sb.global_step)), metric, args.input)
                pairs.append([a, sa.epoch, b, sb.epoch, value])
        if pairs:
            print(f"\nLast snapshots compared run against run ({metric}, same probe and method):\n", file=out)
            print(table(["run a", "epoch a", "run b", "epoch b", metric], pairs), file=out)
    if series:
        fig = drift_timeline(series, title=f"Attribution drift · {Path(args.store).name}")
        write_png(args.out, figure_to_png_bytes(fig))
        print(f"\nTimeline written to {args.out}", file=out)
    return 0
