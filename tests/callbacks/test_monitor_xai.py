"""Issue 11 item 13: the xai scalars are Lightning metrics, so ModelCheckpoint and EarlyStopping can monitor them."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from lightning_xai import AttributionDriftCallback, CalibrationCallback
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks.files import read_manifest
from tests.helpers import shapes_loaders


def _trainer(root, callbacks, **kw) -> Trainer:
    opts = dict(accelerator="cpu", max_epochs=3, logger=False, default_root_dir=str(root), callbacks=callbacks,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    opts.update(kw)
    return Trainer(**opts)


class _Seen(Callback):
    def __init__(self, key: str) -> None:
        self.key, self.values = key, []

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.key)
        self.values.append(None if value is None else float(value))


def test_model_checkpoint_keeps_the_best_calibrated_epoch(tmp_path):
    tr, va = shapes_loaders()
    seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="xai/calibration/ece", mode="min", save_top_k=1,
                           filename="{epoch}-{xai/calibration/ece:.4f}", auto_insert_metric_name=False)
    seen = _Seen("xai/calibration/ece")
    calibration = CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise")
    _trainer(tmp_path, [calibration, ckpt, seen]).fit(ShapesCNN(width=4), tr, va)  # today: MisconfigurationException
    eces = [r["scalars"]["xai/calibration/ece"] for r in read_manifest(tmp_path / "xai" / "manifest.jsonl")]
    assert seen.values == pytest.approx(eces) and len(eces) == 3  # in time for on_validation_end, every epoch
    assert float(ckpt.best_model_score) == pytest.approx(min(eces))
    assert ckpt.best_model_path.endswith(f"{eces.index(min(eces))}-{min(eces):.4f}.ckpt")


def test_early_stopping_on_ece_and_on_drift(tmp_path):
    tr, va = shapes_loaders()
    seed_everything(0)
    stop = EarlyStopping(monitor="xai/calibration/ece", mode="min", patience=0, min_delta=1.0)  # stops at once
    trainer = _trainer(tmp_path / "a", [CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise"), stop],
                       max_epochs=5, enable_checkpointing=False)
    trainer.fit(ShapesCNN(width=4), tr, va)  # today: RuntimeError, the metric is not available
    assert trainer.current_epoch == 2 and stop.stopped_epoch == 1

    seed_everything(0)
    drift = AttributionDriftCallback(num_samples=4, store=str(tmp_path / "s.sqlite"), on_error="raise")
    stop = EarlyStopping(monitor="xai/drift/spearman/previous", mode="max", patience=0, min_delta=2.0,
                         strict=False)  # no `previous` at the first validation
    trainer = _trainer(tmp_path / "b", [drift, stop], max_epochs=5, enable_checkpointing=False)
    trainer.fit(ShapesCNN(width=4), tr, va)
    assert "xai/drift/spearman/previous" in trainer.callback_metrics
    assert trainer.current_epoch == 3  # first comparison at epoch 1, no improvement of 2.0 after it


def test_checkpoint_audit_puts_the_scalars_in_callback_metrics(tmp_path):
    tr, va = shapes_loaders()
    seed_everything(0)
    model = ShapesCNN(width=4)
    _trainer(tmp_path / "fit", [ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)], max_epochs=1).fit(
        model, tr, va)
    audit = CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise")
    trainer = _trainer(tmp_path / "audit", [audit])
    trainer.validate(ShapesCNN(width=4), va, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), verbose=False)
    (record,) = read_manifest(tmp_path / "audit" / "xai" / "manifest.jsonl")
    assert float(trainer.callback_metrics["xai/calibration/ece"]) == pytest.approx(record["scalars"][
        "xai/calibration/ece"])
    assert isinstance(trainer.logged_metrics["xai/calibration/ece"], torch.Tensor)


def test_validate_and_test_return_and_print_the_xai_scalars(tmp_path, capsys):
    import csv

    from lightning.pytorch.loggers import CSVLogger

    tr, va = shapes_loaders()
    seed_everything(0)
    _trainer(tmp_path / "fit", [ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)], max_epochs=1).fit(
        ShapesCNN(width=4), tr, va)
    audit = CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise")
    trainer = _trainer(tmp_path / "audit", [audit], logger=CSVLogger(tmp_path / "audit", name="csv"))
    capsys.readouterr()
    (results,) = trainer.validate(ShapesCNN(width=4), va, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    table = capsys.readouterr().out
    (record,) = read_manifest(next((tmp_path / "audit").rglob("manifest.jsonl")))
    ece = record["scalars"]["xai/calibration/ece"]
    assert results["xai/calibration/ece"] == pytest.approx(ece) and "val/loss" in results
    assert "xai/calibration/ece" in table and "Validate metric" in table
    trainer.loggers[0].save()
    with open(trainer.loggers[0].experiment.metrics_file_path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("xai/calibration/ece")]
    # the sink's copy at the checkpoint's step (4 batches), Lightning's own at step 0 (it logs validate there)
    assert sorted(int(r["step"]) for r in rows) == [0, record["global_step"]] and record["global_step"] == 4
    assert all(float(r["xai/calibration/ece"]) == pytest.approx(ece) for r in rows)

    tester = _trainer(tmp_path / "test", [CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise")],
                      logger=CSVLogger(tmp_path / "test", name="csv"))
    (results,) = tester.test(ShapesCNN(width=4), va, verbose=False)
    assert "xai/calibration/ece" in results
    tester.loggers[0].save()
    with open(tester.loggers[0].experiment.metrics_file_path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("xai/calibration/ece")]
    assert len(rows) == 1  # not a checkpoint's step: Lightning alone logs it, once
