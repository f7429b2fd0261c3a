"""stages=(..., "predict"): explanations of the predict loader's probe, with no labels, logged at the model's step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import CalibrationCallback, GradCAMCallback, ProbingCallback, SHAPCallback
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest
from tests.helpers import read_events, tiny_trainer


class _Predicts(ShapesCNN):
    def predict_step(self, batch, batch_idx):
        return self(batch[0]).argmax(1)


def _images_only() -> DataLoader:
    ds = SyntheticShapes(16, image_size=16, seed=2)
    return DataLoader(TensorDataset(torch.stack([ds[i][0] for i in range(16)])), batch_size=8)  # no labels


def test_predict_explains_the_predict_loaders_probe(tmp_path):
    torch.manual_seed(0)
    callbacks = [GradCAMCallback(num_samples=4, stages=("predict",), target="pred"),
                 SHAPCallback(num_samples=2, n_background=4, stages=("predict",), target="pred", on_error="raise")]
    trainer = tiny_trainer(tmp_path, callbacks)
    predictions = trainer.predict(_Predicts(num_classes=4, width=4), _images_only())
    assert len(predictions) == 2
    lines = list(read_manifest(Path(trainer.log_dir) / "xai" / "manifest.jsonl"))
    assert sorted((r["callback"], r["stage"], r["global_step"]) for r in lines) == [
        ("gradcam", "predict", 0), ("shap", "predict", 0)]
    for r in lines:
        assert any(f.endswith(".png") for f in r["files"])
    events = read_events(trainer.log_dir)
    assert events["images"]["xai/gradcam/gradcam"] == [0]
    assert events["scalars"]["xai/shap/completeness/relative_median"] == [0]
    assert "xai/gradcam/seconds" in trainer.callback_metrics  # Lightning has no `log` in predict: set directly


def test_predict_is_not_explained_unless_asked(tmp_path):
    trainer = tiny_trainer(tmp_path, [GradCAMCallback(num_samples=2)])  # default stages: fit, validate, test
    trainer.predict(_Predicts(num_classes=4, width=4), _images_only())
    assert not (Path(trainer.log_dir) / "xai").exists()


def test_label_target_without_labels_fails_loudly(tmp_path):
    trainer = tiny_trainer(tmp_path, [GradCAMCallback(num_samples=2, stages=("predict",), target="label")])
    with pytest.warns(RuntimeWarning, match="GradCAMCallback failed during predict"):
        trainer.predict(_Predicts(num_classes=4, width=4), _images_only())


@pytest.mark.parametrize("make", [CalibrationCallback, ProbingCallback])
def test_callbacks_that_need_labels_refuse_the_predict_stage(make):
    with pytest.raises(ValueError, match="stages"):
        make(stages=("fit", "predict"))
