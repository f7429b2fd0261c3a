"""Truth: on synthetic shapes a trained CNN's Grad-CAM points at the decisive object; random weights do not."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks.gradcam import GradCAMCallback
from lightning_xai.datasets import SyntheticShapes, SyntheticShapesDataModule
from lightning_xai.demo import ShapesCNN
from lightning_xai.functional import explanation_mode
from lightning_xai.functional.localization import pointing_game


def _pointing(model: ShapesCNN, probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor], method: str) -> float:
    cb = GradCAMCallback(methods=method, target="label")
    x, y, mask = probe
    with explanation_mode(model):
        maps = cb._explain(model, ModelInputs(args=(x,), labels=y, mask=mask))["maps"][method]
    return float(pointing_game(maps, mask).float().mean())


@pytest.mark.slow
def test_trained_cnn_points_at_the_object_and_random_weights_do_not():
    seed_everything(0)
    dm = SyntheticShapesDataModule(batch_size=32, num_train=1024, num_val=256, image_size=32)
    model = ShapesCNN(num_classes=3)
    trainer = Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    acc = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/acc"]
    assert acc >= 0.95
    ds = SyntheticShapes(num_samples=64, image_size=32, seed=1234)
    probe = tuple(torch.stack(t) for t in zip(*(ds[i] for i in range(64))))
    trained = {m: _pointing(model, probe, m) for m in ("gradcam", "gradcam++", "layercam")}
    assert min(trained.values()) >= 0.8, trained
    random_model = ShapesCNN(num_classes=3)  # the sanity check of Adebayo et al.: randomised weights
    randomised = {m: _pointing(random_model, probe, m) for m in trained}
    for m in trained:
        assert randomised[m] <= trained[m] - 0.3, (trained, randomised)
