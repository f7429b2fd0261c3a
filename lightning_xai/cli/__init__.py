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
and prints the ``drift`` tables of those runs (see :mod:`lightning_xai.cli._audit`).

A user error is one line on stderr naming the file, exit status 2; ``--debug`` adds its traceback (see :func:`main`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from lightning_xai.cli._drift import METRICS, drift_command
from lightning_xai.cli._errors import UserError, report

__all__ = ["main"]

_LIGHTNING_FLAGS = (
    "Every other flag goes to LightningCLI: --config FILE (YAML with model, data, trainer and "
    "trainer.callbacks), --model CLASS_PATH, --data CLASS_PATH, --trainer.*, --seed_everything "
    "(default 0), --print_config."
)
_DEBUG = "on a user error, print the traceback before the one-line message"


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
        "--metric", default="spearman", choices=METRICS, help="the metric shown (default: spearman)"
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
        "--metric", default="spearman", choices=METRICS, help="the metric shown (default: spearman)"
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
        return drift_command(args, out)
    from lightning_xai.cli import _audit  # LightningCLI and jsonargparse load only for these two

    return _audit.audit(args, rest, out) if args.command == "audit" else _audit.compare(args, rest, out)

