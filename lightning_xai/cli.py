"""The ``lightning-xai`` command line: read an attribution store, audit and compare checkpoints.

    lightning-xai drift --store xai_store.sqlite [--reference RUN] [--metric spearman] [--out drift.png]

prints a table of the runs of an :class:`AttributionStore` (snapshots, epochs, drift against each run's first
snapshot, its previous one and its reference run, and the last snapshots of every pair of runs compared), and
writes a PNG timeline.

    lightning-xai audit --config audit.yaml --ckpt_path model.ckpt [LightningCLI flags]
    lightning-xai compare --config audit.yaml --ckpt_path a.ckpt b.ckpt [--names v1 v2] [--store FILE]
        [--method gradcam] [--metric spearman] [--out compare.png] [LightningCLI flags]

build model, data, trainer and callbacks with Lightning's ``LightningCLI`` (``--config``, ``--model``,
``--data``, ``--trainer.*``; model and data by ``class_path``) and re-validate checkpoints without training:
``audit`` prints the ``xai/...`` scalars and where the artifacts went; ``compare`` validates two or more
checkpoints of one model config as runs of one store (each after the first with the first as its reference)
and prints the ``drift`` tables of those runs (see :mod:`lightning_xai._cli_audit`).

A user error is one line on stderr naming the file, exit status 2; ``--debug`` adds its traceback (see :func:`main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from lightning_xai._cli_errors import UserError, open_store, report, write_png

__all__ = ["main"]

_AGAINST = ("first", "previous", "reference")
_METRICS = ("spearman", "ndcg", "topk_iou", "cosine", "com_shift", "focus_radius_change", "top_token_overlap")
_LIGHTNING_FLAGS = (
    "Every other flag goes to LightningCLI: --config FILE (YAML with model, data, trainer and "
    "trainer.callbacks), --model CLASS_PATH, --data CLASS_PATH, --trainer.*, --seed_everything "
    "(default 0), --print_config."
)
_DEBUG = "on a user error, print the traceback before the one-line message"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table with aligned columns."""
    cells = [[str(h) for h in headers]] + [
        ["-" if c is None else (f"{c:.3f}" if isinstance(c, float) else str(c)) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


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


def _drift(args: argparse.Namespace, out: TextIO) -> int:
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
                    *(drift.get(a) for a in _AGAINST),
                    ref_run,
                ]
            )
            identical = 0.0 if metric in ZERO_WHEN_IDENTICAL else 1.0
            series.setdefault(metric, {}).setdefault(f"{run} vs first", []).append(
                (snaps[0].epoch, identical)
            )
            for info in snaps:
                for against in _AGAINST:
                    value = _pick(info.meta.get("drift", {}).get(against, {}), metric, args.input)
                    if value is not None and against != "previous":
                        series.setdefault(metric, {}).setdefault(f"{run} vs {against}", []).append(
                            (info.epoch, value)
                        )
        shown = f"{metric} of {args.input}" if args.input else metric
        print(f"Attribution drift in {args.store}: {shown} of each run's last snapshot\n", file=out)
        print(
            _table(
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
            print(_table(["run a", "epoch a", "run b", "epoch b", metric], pairs), file=out)
    if series:
        fig = drift_timeline(series, title=f"Attribution drift · {Path(args.store).name}")
        write_png(args.out, figure_to_png_bytes(fig))
        print(f"\nTimeline written to {args.out}", file=out)
    return 0


def _parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)  # before or after the subcommand
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG)
    parser = argparse.ArgumentParser(
        prog="lightning-xai", description="Explain Lightning models: audit tools."
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG)
    sub = parser.add_subparsers(dest="command", required=True)
    drift = sub.add_parser(
        "drift",
        parents=[debug],
        help="runs in an attribution store and how their explanations drifted",
        description="Print the runs of an AttributionStore and their drift; write a PNG.",
    )
    drift.add_argument(
        "--store", required=True, help="the SQLite file of AttributionDriftCallback(store=...)"
    )
    drift.add_argument("--runs", nargs="+", default=None, help="runs to show (default: all)")
    drift.add_argument(
        "--reference", default=None, help="name this run as every run's reference in the table"
    )
    drift.add_argument(
        "--metric", default="spearman", choices=_METRICS, help="the metric shown (default: spearman)"
    )
    drift.add_argument(
        "--input",
        default=None,
        help="for snapshots of several explained inputs (image+text SHAP): the one shown, e.g. "
        "input_ids (default: the first by name)",
    )
    drift.add_argument(
        "--out", default="drift.png", help="where to write the timeline PNG (default: drift.png)"
    )
    audit = sub.add_parser(
        "audit",
        parents=[debug],
        allow_abbrev=False,
        epilog=_LIGHTNING_FLAGS,
        help="re-validate a checkpoint with the configured callbacks (LightningCLI config)",
        description="Validate a checkpoint with the model, data, trainer and callbacks of a "
        "LightningCLI config, no training; print the xai/ scalars and where the "
        "artifacts went.",
    )
    audit.add_argument("--ckpt_path", required=True, help="the checkpoint to validate")
    compare = sub.add_parser(
        "compare",
        parents=[debug],
        allow_abbrev=False,
        epilog=_LIGHTNING_FLAGS,
        help="validate checkpoints of one model config and compare their explanations",
        description="Validate two or more checkpoints of one LightningCLI model config, keep "
        "each one's explanations as a run of an attribution store (every run after "
        "the first with the first as its reference), print the drift tables of "
        "those runs and write a PNG.",
    )
    compare.add_argument("--ckpt_path", nargs="+", required=True, help="two or more checkpoints of the model")
    compare.add_argument(
        "--names",
        nargs="+",
        default=None,
        help="run names, one per checkpoint (default: the checkpoint file stems)",
    )
    compare.add_argument(
        "--store",
        default=None,
        help="the SQLite store (default: the config's AttributionDriftCallback store, else "
        "<trainer.default_root_dir>/xai_store.sqlite)",
    )
    compare.add_argument(
        "--method",
        default=None,
        help="the attribution method of the AttributionDriftCallback added when the config has "
        "none (default: gradcam); given, it also replaces the config's",
    )
    compare.add_argument(
        "--metric", default="spearman", choices=_METRICS, help="the metric shown (default: spearman)"
    )
    compare.add_argument("--out", default="compare.png", help="where to write the PNG (default: compare.png)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the ``lightning-xai`` command line; returns the exit status.

    Our own flags are parsed here; for ``audit`` and ``compare`` every other argument goes to LightningCLI.

    A user error prints exactly one line on ``sys.stderr``, ``lightning-xai <command>: error: <what>``, naming
    the file or flag, and returns 2: a wrong value of one of our flags; a store that is missing, a directory, a
    text file, another application's SQLite database or of a newer schema; a checkpoint that is missing,
    unreadable, not a Lightning checkpoint or whose weights do not fit the model (another class, other
    ``init_args``); a YAML config that is missing or does not parse (with its line); an ``--out`` that cannot
    be written. With ``--debug`` (before or after the subcommand) the traceback comes first, with the original
    error (torch's, SQLite's, the store's) as its cause; the status is still 2. Usage errors of argparse and of
    LightningCLI's parser exit with status 2 through ``SystemExit``, as argparse does. Any other exception is a
    bug and propagates as a traceback, ``--debug`` or not.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        out: where the report goes (default ``sys.stdout``); errors go to ``sys.stderr``.

    Returns:
        0 on success, 1 when a run did not produce what was asked, 2 for a user error.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     main(["drift", "--store", "no-such-store.sqlite"])
        2
        >>> print(err.getvalue(), end="")
        lightning-xai drift: error: no store at no-such-store.sqlite (`--store` names the file an AttributionDriftCallback wrote)
        >>> main(["--debug", "audit", "--ckpt_path", "no-such.ckpt"])  # the traceback, then the line, on stderr
        2
    """  # noqa: E501
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    try:
        return _run(parser, args, rest, out or sys.stdout)
    except UserError as err:
        return report(args.command, err, debug=args.debug)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str], out: TextIO) -> int:
    if args.command == "drift":
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return _drift(args, out)
    from lightning_xai import _cli_audit  # LightningCLI and jsonargparse load only for these two

    return (
        _cli_audit.audit(args, rest, out) if args.command == "audit" else _cli_audit.compare(args, rest, out)
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
