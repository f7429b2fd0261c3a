"""Issue 12 points 2 and 7: drift never calls flat maps stable, records the layer, and picks its method by input."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionDriftCallback, AttributionStore
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks.files import read_manifest


def _trainer(root, callbacks, epochs=2) -> Trainer:
    return Trainer(accelerator="cpu", max_epochs=epochs, logger=False, default_root_dir=str(root),
                   callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False, num_sanity_val_steps=0, limit_train_batches=2)


def _images():
    return (DataLoader(SyntheticShapes(32, image_size=16, seed=1), batch_size=8),
            DataLoader(SyntheticShapes(16, image_size=16, seed=2), batch_size=8))


class _Tabular(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_flat_maps_are_undefined_not_stable(tmp_path):
    tr, va = _images()
    seed_everything(0)
    drift = AttributionDriftCallback(num_samples=4, store=str(tmp_path / "s.sqlite"), target_layer="pool",
                                     on_error="raise")  # after global pooling: one value per map, flat
    with pytest.warns(RuntimeWarning, match="flat .*layer 'pool'.*target_layer"):
        _trainer(tmp_path, [drift]).fit(ShapesCNN(width=4), tr, va)
    with AttributionStore(tmp_path / "s.sqlite", create=False) as store:
        (run,) = store.runs()
        infos = store.snapshots(run.name)
        assert [i.meta["layer"] for i in infos] == ["pool", "pool"]  # which layer made each snapshot
        last = infos[-1].meta
        assert last["flat"]["gradcam"] == [True] * 4
        assert math.isnan(last["drift"]["previous"]["spearman"])  # today: 1.0, "perfectly stable"
    records = [r for r in read_manifest(tmp_path / "xai" / "manifest.jsonl") if r["callback"] == "drift"]
    assert [r["layer"] for r in records] == ["pool", "pool"]
    assert all(r["scalars"]["xai/drift/flat"] == 1.0 for r in records)
    assert math.isnan(records[-1]["scalars"]["xai/drift/spearman/previous"])


def test_a_map_with_extent_is_not_flat(tmp_path):
    tr, va = _images()
    seed_everything(0)
    drift = AttributionDriftCallback(num_samples=4, store=str(tmp_path / "s.sqlite"), on_error="raise")
    _trainer(tmp_path, [drift]).fit(ShapesCNN(width=4), tr, va)
    records = [r for r in read_manifest(tmp_path / "xai" / "manifest.jsonl") if r["callback"] == "drift"]
    assert drift.method == "gradcam"  # "auto" on images
    assert records[-1]["scalars"]["xai/drift/flat"] == 0.0
    assert -1.0 <= records[-1]["scalars"]["xai/drift/spearman/previous"] <= 1.0
    assert records[-1]["layer"].startswith("features.")  # the last feature map with spatial extent


def test_auto_method_explains_tabular_models_with_shap(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 5, generator=gen), torch.randint(0, 3, (32,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    seed_everything(0)
    drift = AttributionDriftCallback(num_samples=4, store=str(tmp_path / "s.sqlite"), on_error="raise",
                                     method_kwargs={"n_background": 8, "nsamples": 16})
    _trainer(tmp_path, [drift]).fit(_Tabular(), loader, loader)  # today: Grad-CAM's "explains images" error
    assert drift.method == "shap"
    with AttributionStore(tmp_path / "s.sqlite", create=False) as store:
        (run,) = store.runs()
        infos = store.snapshots(run.name)
        assert [i.method for i in infos] == ["shap", "shap"]
        assert infos[-1].meta["drift"]["previous"]["spearman"] <= 1.0
    state = drift.state_dict()
    again = AttributionDriftCallback(store=str(tmp_path / "s.sqlite"))
    again.load_state_dict(state)  # a resume follows the method its run was written with
    assert again.method == "shap"


def test_auto_with_a_target_layer_means_gradcam():
    assert AttributionDriftCallback(target_layer="features.7").method == "gradcam"
    assert AttributionDriftCallback().method == "auto"
