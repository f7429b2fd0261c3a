"""The four callbacks under the Trainer set-ups users have (issue 11 acceptance).

Each set-up runs one fit with GradCAM, SHAP, calibration and drift (Grad-CAM) callbacks and one without, from the
same seed, and checks: one artifact set per callback and method for every validation that ran, at the epoch and
global step of that validation (manifest, folders, TensorBoard or CSV where attached); no file listed twice or
missing; the final weights bit-identical to the run without the callbacks.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, IterableDataset

from lightning_xai import AttributionDriftCallback, CalibrationCallback, GradCAMCallback, SHAPCallback
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks.files import read_manifest
from tests.helpers import read_events

pytestmark = pytest.mark.slow

_CALLBACKS = ("gradcam", "shap", "calibration", "drift")


class _Stream(IterableDataset):
    """The validation set as an iterable dataset (no length, no indices)."""

    def __init__(self, data: SyntheticShapes) -> None:
        self.data = data

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


class _Model(ShapesCNN):
    """ShapesCNN as users write it for several validation loaders."""

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return super().validation_step(batch, batch_idx)


class _Validations(Callback):
    """Records the (epoch, global step) of every validation run that is not the sanity check."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.seen.append((trainer.current_epoch, trainer.global_step))


def _xai(root: Path) -> list[Any]:
    return [
        GradCAMCallback(num_samples=2, on_error="raise"),
        SHAPCallback(num_samples=2, n_background=4, nsamples=8, completeness_tol=None, on_error="raise"),
        CalibrationCallback(n_bins=5, gallery_size=2, on_error="raise"),
        AttributionDriftCallback(num_samples=2, store=str(root / "store.sqlite"), on_error="raise"),
    ]


def _loaders(setup: str) -> tuple[DataLoader, Any]:
    train, val = SyntheticShapes(32, image_size=16, seed=1), SyntheticShapes(16, image_size=16, seed=2)
    kw: dict[str, Any] = {"num_workers": 2, "persistent_workers": True} if setup == "workers" else {}
    val_loader: Any = DataLoader(val, batch_size=8, **kw)
    if setup == "two_val_loaders":
        val_loader = [val_loader, DataLoader(SyntheticShapes(8, image_size=16, seed=3), batch_size=8)]
    if setup == "iterable_val":
        val_loader = DataLoader(_Stream(val), batch_size=8)
    return DataLoader(train, batch_size=8, **kw), val_loader


_SETUPS: dict[str, dict[str, Any]] = {
    "bf16_mixed": {"precision": "bf16-mixed"},
    "val_check_interval": {"val_check_interval": 0.5},
    "check_val_every_n_epoch": {"check_val_every_n_epoch": 2, "max_epochs": 2},
    "fast_dev_run": {"fast_dev_run": True},
    "accumulate_grad_batches": {"accumulate_grad_batches": 2},
    "two_val_loaders": {},
    "iterable_val": {},
    "workers": {},
    "resume": {"max_epochs": 2},
    "logger_false": {"logger": False},
    "csv_only": {"logger": "csv"},
    "tensorboard_and_csv": {"logger": "both"},
    "max_steps": {"max_steps": 6, "max_epochs": -1},
}


def _trainer(root: Path, setup: str, callbacks: list[Any], **over: Any) -> Trainer:
    opts: dict[str, Any] = dict(accelerator="cpu", devices=1, max_epochs=1, default_root_dir=str(root),
                                callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                                num_sanity_val_steps=0, enable_checkpointing=False,
                                logger=TensorBoardLogger(str(root), name="tb"))
    opts.update(_SETUPS[setup])
    logger = opts.get("logger")
    if logger == "csv":
        opts["logger"] = CSVLogger(str(root), name="csv")
    elif logger == "both":
        opts["logger"] = [TensorBoardLogger(str(root), name="tb"), CSVLogger(str(root), name="csv")]
    opts.update(over)
    return Trainer(**opts)


def _fit(root: Path, setup: str, with_xai: bool) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
    seed_everything(0)
    model = _Model(width=4)
    train, val = _loaders(setup)
    spy = _Validations()
    callbacks = [*(_xai(root) if with_xai else []), spy]
    if setup == "resume":  # one epoch, checkpoint, then a new Trainer (new callbacks) resumes to epoch 2
        ckpt = ModelCheckpoint(dirpath=root / "ckpt", save_last=True)
        _trainer(root, setup, [*callbacks, ckpt], max_epochs=1, enable_checkpointing=True).fit(model, train, val)
        seed_everything(0)
        model = _Model(width=4)
        callbacks = [*(_xai(root) if with_xai else []), spy]
        _trainer(root, setup, callbacks).fit(model, train, val, ckpt_path=str(root / "ckpt" / "last.ckpt"))
    else:
        _trainer(root, setup, callbacks).fit(model, train, val)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, spy.seen


@pytest.mark.parametrize("setup", sorted(_SETUPS))
def test_callbacks_under_trainer_setup(setup, tmp_path):
    torch.set_num_threads(1)
    plain, plain_seen = _fit(tmp_path / "plain", setup, with_xai=False)
    weights, seen = _fit(tmp_path / "xai", setup, with_xai=True)
    assert seen == plain_seen and seen  # the same validations ran
    for key, value in plain.items():  # observers: the callbacks never touch training
        assert torch.equal(weights[key], value), f"{setup}: weight {key} differs from the run without callbacks"

    root = tmp_path / "xai"
    manifests = sorted(root.rglob("xai/manifest.jsonl"))  # one per log dir (a resumed fit gets a new version)
    assert len(manifests) == (2 if setup == "resume" else 1), manifests
    records = [dict(r, xai=m.parent) for m in manifests for r in read_manifest(m)]
    expected = Counter(seen)
    for name in _CALLBACKS:
        mine = Counter((r["epoch"], r["global_step"]) for r in records if r["callback"] == name and r["stage"] == "fit")
        assert mine == expected, f"{setup}: {name} wrote {dict(mine)}, validations ran at {dict(expected)}"
    files = [r["xai"] / f for r in records for f in r["files"]]
    assert len(files) == len(set(files)), f"{setup}: a file is listed twice (overwritten)"
    for f in files:
        assert f.is_file(), f
    for r in records:  # the folder of every artifact set names its own validation
        folder = r.get("folder")
        if folder is not None:
            assert f"epoch={r['epoch']}-step={r['global_step']}" in folder

    store = root / "store.sqlite"
    if setup == "fast_dev_run":  # a debug run never writes into the user's store
        assert not store.exists()
    else:  # one run (a resume appends to it), one snapshot per validation
        from lightning_xai import AttributionStore

        with AttributionStore(store, create=False) as s:
            (run,) = s.runs()
            assert run.name and [(i.epoch, i.global_step) for i in s.snapshots(run.name)] == seen

    steps = sorted({step for _, step in seen})
    if setup not in ("logger_false", "csv_only", "fast_dev_run"):  # TensorBoard attached
        events = read_events(root)
        for tag in ("xai/gradcam/gradcam", "xai/calibration/reliability", "xai/drift/snapshots"):
            assert sorted(events["images"][tag]) == steps, (setup, tag, events["images"].get(tag))
        assert sorted(events["scalars"]["xai/calibration/ece"]) == steps
    if setup in ("csv_only", "tensorboard_and_csv"):
        (metrics,) = root.rglob("metrics.csv")
        rows = [r for r in csv.DictReader(metrics.open()) if r.get("xai/calibration/ece")]
        assert sorted(int(r["step"]) for r in rows) == steps
