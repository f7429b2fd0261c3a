"""CalibrationCallback end to end: numbers equal torchmetrics', figures and artifacts land, bad input is clear."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from lightning_xai import CalibrationCallback, GradCAMCallback
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest
from tests.helpers import read_events, scalar_values, tiny_trainer


def _val_predictions(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        pairs = [(model(x), y) for x, y, *_ in loader]
    return torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])


def test_multiclass_numbers_equal_torchmetrics_and_artifacts_land(tmp_path, shapes_dm):
    seed_everything(0)
    model = ShapesCNN()
    cb = CalibrationCallback(n_bins=10, per_class=True, class_names=["square", "circle", "triangle"],
                             on_error="raise")
    trainer = tiny_trainer(tmp_path, [cb, GradCAMCallback(num_samples=2)], limit_val_batches=None, max_epochs=1)
    trainer.fit(model, datamodule=shapes_dm)
    logits, labels = _val_predictions(model, shapes_dm.val_dataloader())
    summary = json.loads(next(tmp_path.rglob("calibration.json")).read_text())
    for norm, key in (("l1", "ece"), ("max", "mce"), ("l2", "rmsce")):
        ref = float(multiclass_calibration_error(logits.softmax(-1), labels, 3, n_bins=10, norm=norm))
        assert summary["metrics"][key] == pytest.approx(ref, abs=1e-6), key
        ((step, logged),) = scalar_values(tmp_path, f"xai/calibration/{key}")
        assert step == trainer.global_step and logged == pytest.approx(ref, abs=1e-6)
    assert summary["counts"] == pytest.approx(
        torch.histc(logits.softmax(-1).max(-1).values, bins=10, min=0, max=1).tolist())
    ev = read_events(tmp_path)
    assert {"xai/calibration/reliability", "xai/calibration/per_class_ece",
            "xai/calibration/confidently_wrong"} <= set(ev["images"])
    for key in ("ace", "brier", "nll", "accuracy", "confidence", "temperature", "ece_after_temperature"):
        assert f"xai/calibration/{key}" in ev["scalars"]
    rec = next(r for m in tmp_path.rglob("manifest.jsonl") for r in read_manifest(m) if r["callback"] == "calibration")
    assert rec["temperature"] > 0 and any(f.endswith("calibration.json") for f in rec["files"])


class _Binary(ShapesCNN):
    """Binary classifier whose validation_step returns its logits (the callback reads them, no second forward)."""

    def __init__(self) -> None:
        super().__init__(num_classes=1)
        self.forward_calls = 0

    def forward(self, x):
        self.forward_calls += 1
        return super().forward(x)[:, 0]

    def validation_step(self, batch, batch_idx):
        return {"logits": self(batch[0])}


def test_binary_from_step_outputs_and_checkpoint_audit(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 3, 16, 16, generator=gen), torch.randint(0, 2, (48,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    model = _Binary()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path / "fit", [ckpt], enable_checkpointing=True, max_epochs=1, limit_train_batches=2)
    trainer.fit(model, DataLoader(TensorDataset(x, y.float()), batch_size=16))
    audit = CalibrationCallback(n_bins=7, source="outputs", on_error="raise")
    t = tiny_trainer(tmp_path / "audit", [audit], limit_val_batches=None)
    model.forward_calls = 0
    t.validate(model, loader, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert model.forward_calls == 3  # one per batch: the callback used the step's outputs
    logits, labels = _val_predictions(model, loader)
    # at the checkpoint's global step (the sink), and at 0 where Lightning logs every metric of validate(ckpt_path)
    (ece,) = {v for _, v in scalar_values(tmp_path / "audit", "xai/calibration/ece")}
    assert sorted(s for s, _ in scalar_values(tmp_path / "audit", "xai/calibration/ece")) == [0, 2]
    assert ece == pytest.approx(float(binary_calibration_error(logits.sigmoid(), labels, n_bins=7)), abs=1e-6)


def test_missing_labels_name_batch_to_inputs(tmp_path):
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 16, 16)), batch_size=4)
    cb = CalibrationCallback(on_error="raise")

    class _NoLabels(ShapesCNN):
        def validation_step(self, batch, batch_idx):
            return None

    with pytest.raises(ValueError, match="batch_to_inputs"):
        tiny_trainer(tmp_path, [cb]).validate(_NoLabels(), loader)


class _Fixed(ShapesCNN):
    """Returns preset outputs, to feed the callback bad values."""

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        self.values = values

    def forward(self, x):
        return self.values[: x.shape[0]].clone()

    def validation_step(self, batch, batch_idx):
        return None


def test_probs_that_do_not_sum_to_one_are_refused(tmp_path):
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])), batch_size=4)
    cb = CalibrationCallback(input="probs", on_error="raise")
    with pytest.raises(ValueError, match="input"):
        tiny_trainer(tmp_path, [cb]).validate(_Fixed(torch.full((4, 3), 0.5)), loader)


def test_nan_logits_are_counted_warned_and_excluded(tmp_path):
    logits = torch.tensor([[2.0, 0.0, 0.0], [float("nan"), 0.0, 1.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 0])
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 8, 8), labels), batch_size=4)
    cb = CalibrationCallback(n_bins=5, on_error="raise")
    with pytest.warns(RuntimeWarning, match="1 predictions with NaN"):
        tiny_trainer(tmp_path, [cb]).validate(_Fixed(logits), loader)
    keep = torch.tensor([0, 2, 3])
    ref = float(multiclass_calibration_error(logits[keep].softmax(-1), labels[keep], 3, n_bins=5))
    assert scalar_values(tmp_path, "xai/calibration/ece")[0][1] == pytest.approx(ref, abs=1e-6)
    assert scalar_values(tmp_path, "xai/calibration/nonfinite")[0][1] == 1


@pytest.mark.parametrize(("kwargs", "match"), [({"n_bins": 0}, "`n_bins`"), ({"task": "regression"}, "`task`"),
                                               ({"input": "scores"}, "`input`"), ({"gallery_size": -1}, "`gallery_size`"),
                                               ({"source": "hooks"}, "`source`")])
def test_constructor_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CalibrationCallback(**kwargs)


def test_multilabel_is_detected_and_equals_flattened_binary(tmp_path):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(24, 4, generator=gen) * 2
    labels = (torch.rand(24, 4, generator=gen) < 0.4).long()
    loader = DataLoader(TensorDataset(logits, labels), batch_size=8)  # the "inputs" are the logits themselves

    class _Identity(_Fixed):
        def forward(self, x):
            return x

    cb = CalibrationCallback(n_bins=6, gallery_size=0, on_error="raise")
    tiny_trainer(tmp_path, [cb], limit_val_batches=None).validate(_Identity(logits), loader)
    ref = float(binary_calibration_error(logits.sigmoid().flatten(), labels.flatten(), n_bins=6))
    assert scalar_values(tmp_path, "xai/calibration/ece")[0][1] == pytest.approx(ref, abs=1e-6)
    assert next(read_manifest(next(tmp_path.rglob("manifest.jsonl"))))["task"] == "multilabel"
