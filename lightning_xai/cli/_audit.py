"""``lightning-xai audit`` and ``lightning-xai compare``: re-validate checkpoints through Lightning's LightningCLI.

Model, data, trainer and callbacks come from the usual LightningCLI YAML and flags (``--config``, ``--model``,
``--data``, ``--trainer.*``, ``--trainer.callbacks``); model and datamodule are given by ``class_path`` (any
``LightningModule`` / ``LightningDataModule``). Each checkpoint gets a fresh ``LightningCLI(..., run=False)`` and
``trainer.validate(model, datamodule, ckpt_path=...)``: the callbacks explain the checkpoint's weights, nothing is
trained. ``--seed_everything`` defaults to 0, so every checkpoint is validated under the same seed.

``compare`` keeps each checkpoint's explanations as one run of an :class:`~lightning_xai.AttributionStore`,
through the config's :class:`~lightning_xai.AttributionDriftCallback` (its ``run``, ``reference_run`` and
``store`` are set per checkpoint in the parsed config, so the constructor gets them and a run name restored
from a checkpoint's callback state never replaces them) or one added with ``method=--method``. Checkpoints of
different model classes (a Teacher and a Student of two classes) are out of its scope: run ``audit`` once per
model with an ``AttributionDriftCallback`` in each config (one ``store``, ``run: teacher`` / ``run: student``,
the Student's ``reference_run: teacher``), then ``lightning-xai drift --store ...``.

This module imports LightningCLI (jsonargparse); :func:`lightning_xai.cli.main` imports it only for these two
subcommands.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lightning_xai._checks import expected
from lightning_xai.callbacks._shell import CallbackShell
from lightning_xai.callbacks.drift import DRIFT_METHODS, AttributionDriftCallback
from lightning_xai.cli._drift import drift_command
from lightning_xai.cli._errors import UserError, check_checkpoint, check_configs, load_error, open_store
from lightning_xai.cli._maps import write_compare_maps
from lightning_xai.cli._table import table
from lightning_xai.sinks.files import manifest_path, read_manifest

__all__ = ["audit", "compare"]


class _ValidateCLI(LightningCLI):
    """LightningCLI that only builds: model and data by ``class_path``, trainer and callbacks from YAML and flags.

    Args:
        args: the LightningCLI arguments (what our own parser left).
        prog: the program name in LightningCLI's own messages.
        drift: for ``compare``: ``run``, ``reference_run``, ``store``, ``method`` of the config's
            AttributionDriftCallbacks (``None`` values leave the config's), or of one added when there is none.
    """

    def __init__(self, args: Sequence[str], prog: str, drift: dict[str, Any] | None = None) -> None:
        self._drift_args = drift
        super().__init__(
            model_class=None,
            datamodule_class=None,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            seed_everything_default=0,
            parser_kwargs={"prog": prog},
            args=list(args),
            run=False,
        )

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # ``args`` are what remains of our own command line, so LightningCLI's warning about ``args`` given
        # next to ``sys.argv`` does not apply.
        self.config = parser.parse_args(args)

    @override
    def before_instantiate_classes(self) -> None:
        if self._drift_args is None:
            return
        entries = self.config.trainer.callbacks or []
        entries = entries if isinstance(entries, list) else [entries]
        ours = [e for e in entries if _is_drift_callback(e.get("class_path"))]
        for entry in ours:
            for key, value in self._drift_args.items():
                if value is not None:
                    setattr(entry.init_args, key, value)
        if not ours:
            kwargs = {k: v for k, v in self._drift_args.items() if v is not None}
            self.trainer_defaults["callbacks"] = [AttributionDriftCallback(**{"method": "gradcam", **kwargs})]


def _is_drift_callback(class_path: Any) -> bool:
    """Whether a config's callback ``class_path`` names AttributionDriftCallback or a subclass."""
    if not isinstance(class_path, str):
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        cls = None
    return (
        name == "AttributionDriftCallback"
        if cls is None
        else (isinstance(cls, type) and issubclass(cls, AttributionDriftCallback))
    )


def _validate(cli: LightningCLI, ckpt: str) -> tuple[dict[str, float], dict[Path, list[dict[str, Any]]]]:
    """Validate ``ckpt``: the model's metrics, and per manifest the lines the callbacks wrote for this checkpoint."""
    since = time.time()
    try:
        results = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)
    except RuntimeError as err:  # torch's "Error(s) in loading state_dict" is the user's; anything else a bug
        mismatch = load_error(err, ckpt, cli.model)
        if mismatch is None:
            raise
        raise mismatch from err
    metrics = {k: float(v) for r in results for k, v in r.items()}
    records = {
        m: [
            r
            for r in read_manifest(m)
            if r.get("ckpt_path") == os.path.abspath(ckpt) and r.get("timestamp", 0) >= since
        ]
        for m in _manifests(cli.trainer)
    }
    return metrics, records


def _manifests(trainer: pl.Trainer) -> list[Path]:
    """The manifest files of the trainer's lightning_xai callbacks (one per artifact root)."""
    roots = {cb.artifact_root for cb in trainer.callbacks if isinstance(cb, CallbackShell) and cb.artifact_root}
    return sorted(manifest_path(root) for root in roots)


def _drift_callbacks(trainer: pl.Trainer) -> list[AttributionDriftCallback]:
    return [cb for cb in trainer.callbacks if isinstance(cb, AttributionDriftCallback)]


def _not_stored(store: str, names: list[str], ckpts: list[str]) -> list[str]:
    """The runs of which the store holds no snapshot of their checkpoint."""
    if not Path(store).is_file():
        return names
    with open_store(store) as opened:
        held = {r.name for r in opened.runs()}
        return [
            n
            for n, c in zip(names, ckpts)
            if n not in held or not any(s.checkpoint_path == os.path.abspath(c) for s in opened.snapshots(n))
        ]


def audit(args: argparse.Namespace, lightning_args: Sequence[str], out: TextIO) -> int:
    """``lightning-xai audit``: validate ``args.ckpt_path`` with the configured callbacks and print a report.

    The report lists the ``xai/...`` scalars of this checkpoint (as the callbacks recorded them in their manifest,
    and any in ``trainer.callback_metrics``), the model's validation metrics, the log dir, the manifest files
    and, with an AttributionDriftCallback, its store and run.

    Args:
        args: our parsed flags (``ckpt_path``).
        lightning_args: every other argument, for LightningCLI.
        out: where the report goes.

    Returns:
        0.

    Raises:
        UserError: for a checkpoint that is missing, unreadable or does not fit the model, or a config file that
            is missing or does not parse (``main`` prints it in one line and returns 2).

    Example:
        >>> audit(argparse.Namespace(ckpt_path="no-such.ckpt"), [], sys.stdout)
        Traceback (most recent call last):
        ...
        lightning_xai.cli._errors.UserError: Expected argument `--ckpt_path` to be an existing checkpoint file, but got 'no-such.ckpt'.
    """  # noqa: E501
    ckpt = args.ckpt_path
    check_checkpoint(ckpt)
    check_configs(lightning_args)
    cli = _ValidateCLI(lightning_args, prog="lightning-xai audit")
    metrics, manifests = _validate(cli, ckpt)
    trainer = cli.trainer
    records = [r for rs in manifests.values() for r in rs]
    scalars = {k: v for r in records for k, v in r.get("scalars", {}).items()}
    scalars.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/")})
    where = f" (epoch {records[0]['epoch']}, global step {records[0]['global_step']})" if records else ""
    data = "" if cli.datamodule is None else f" on {type(cli.datamodule).__name__}"
    print(f"Audit of {ckpt}{where}: {type(cli.model).__name__}{data}\n", file=out)
    if scalars:
        print(table(["scalar", "value"], [[k, f"{v:.4g}"] for k, v in sorted(scalars.items())]), file=out)
    else:
        print(
            "No xai/ scalars were logged: does the config have lightning_xai callbacks with 'validate' in their "
            "stages? (See the warnings above.)",
            file=out,
        )
    if metrics:
        print(
            "\nValidation metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())), file=out
        )
    print(f"\nLog dir: {trainer.log_dir}", file=out)
    for manifest, mine in manifests.items():
        sets = ", ".join(sorted({f"{r.get('callback')}/{r.get('method')}" for r in mine}))
        print(
            f"Manifest: {manifest} ({len(mine)} artifact sets from this checkpoint{': ' if mine else ''}{sets})",
            file=out,
        )
    for cb in _drift_callbacks(trainer):
        print(
            f"Drift store: {cb.store_path} (run {cb.run_name!r}; lightning-xai drift --store {cb.store_path})",
            file=out,
        )
    return 0


def compare(args: argparse.Namespace, lightning_args: Sequence[str], out: TextIO) -> int:
    """``lightning-xai compare``: validate checkpoints of one model config as runs of one store, print their drift.

    Each checkpoint in turn gets a fresh LightningCLI and ``trainer.validate``; its explanations are stored as the
    run ``args.names[i]`` (default the checkpoint's file stem), every run after the first with the first as its
    ``reference_run``. Then the tables of ``lightning-xai drift`` for those runs, and the PNG ``args.out``.

    Args:
        args: our parsed flags (``ckpt_path``, ``names``, ``store``, ``method``, ``metric``, ``out``).
        lightning_args: every other argument, for LightningCLI.
        out: where the report goes.

    Returns:
        0; 1 when a checkpoint's explanations were not stored.

    Raises:
        UserError: for a wrong argument, a checkpoint that is missing, unreadable or does not fit the model, a
            config file that is missing or does not parse, a store that is not one (``main`` prints it in one
            line and returns 2).

    Example:
        >>> ns = argparse.Namespace(ckpt_path=["a.ckpt"], names=None, store=None, method=None, metric="spearman",
        ...                         out="compare.png")
        >>> compare(ns, [], sys.stdout)
        Traceback (most recent call last):
        ...
        lightning_xai.cli._errors.UserError: Expected argument `--ckpt_path` to be two or more checkpoint files, but got ['a.ckpt'].
    """  # noqa: E501
    ckpts = list(args.ckpt_path)
    if len(ckpts) < 2:
        raise UserError(expected("--ckpt_path", "two or more checkpoint files", ckpts))
    missing = [c for c in ckpts if not Path(c).is_file()]
    if missing:
        raise UserError(expected("--ckpt_path", "existing checkpoint files", missing))
    names = list(args.names) if args.names else [Path(c).stem for c in ckpts]
    if args.names and (len(names) != len(ckpts) or len(set(names)) != len(names) or not all(names)):
        allowed = f"{len(ckpts)} distinct non-empty run names, one per --ckpt_path"
        raise UserError(expected("--names", allowed, names))
    if len(set(names)) != len(names):
        allowed = "checkpoint files with distinct stems (the default run names; else give --names)"
        raise UserError(expected("--ckpt_path", allowed, ckpts))
    if args.method is not None and args.method not in DRIFT_METHODS:
        raise UserError(expected("--method", f"one of {DRIFT_METHODS}", args.method))
    check_configs(lightning_args)
    for ckpt in ckpts:
        check_checkpoint(ckpt)
    store = args.store
    used: list[str] = []  # the run names written to: `v1#2` when an earlier compare already wrote `v1`
    for i, (ckpt, name) in enumerate(zip(ckpts, names)):
        drift = {"run": name, "reference_run": used[0] if i else None, "store": store, "method": args.method}
        cli = _ValidateCLI(lightning_args, prog="lightning-xai compare", drift=drift)
        if not i:  # the first run's store serves them all; one that is not a store is refused before validating
            default = os.path.join(cli.trainer.default_root_dir, "xai_store.sqlite")
            store = store or _drift_callbacks(cli.trainer)[0].store_path or default
            if Path(store).exists():
                open_store(store, "`--store`" if args.store else "the config's AttributionDriftCallback").close()
        _validate(cli, ckpt)
        used.append(_drift_callbacks(cli.trainer)[0].run_name or name)
        print(f"Validated {ckpt} as run {used[-1]!r} (log dir {cli.trainer.log_dir})", file=out)
    names = used
    empty = _not_stored(str(store), names, ckpts)
    if empty:
        print(
            f"lightning-xai compare: no explanations of runs {empty} were stored in {store}: see the warnings "
            "above (the AttributionDriftCallback needs 'validate' in its stages)",
            file=sys.stderr,
        )
        return 1
    print(file=out)
    drift_args = argparse.Namespace(
        store=str(store), runs=names, reference=None, metric=args.metric, input=None, out=args.out
    )
    status = drift_command(drift_args, out)
    maps = write_compare_maps(str(store), names, args.out) if status == 0 else None
    if maps is not None:
        print(f"Maps side by side (probe x run) written to {maps}", file=out)
    return status
