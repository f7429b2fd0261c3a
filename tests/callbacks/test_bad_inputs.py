"""Bad input gets a clear error naming the argument, what was given and what is allowed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import GradCAMCallback
from lightning_xai.demo import ShapesCNN
from tests.helpers import read_events, scalar_values, tiny_trainer


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, r"Expected argument `num_samples` to be an integer larger than 0, but got 0"),
        ({"methods": ("gradcam", "magiccam")}, r"`methods` to be a list drawn from \[.*'scorecam'"),
        ({"on_error": "ignore"}, r"`on_error` to be one of \['warn', 'raise'\], but got 'ignore'"),
        ({"every_n_epochs": -1}, r"`every_n_epochs`"),
        ({"stages": ("train",)}, r"`stages`"),
        ({"target": -3}, r"`target`"),
        ({"target": "nonexistent.module.fn"}, r"`target` to be a callable or an importable dotted path"),
        ({"alpha": 2.0}, r"`alpha` to be a number in \[0, 1\]"),
        ({"target_layer": ""}, r"`target_layer`"),
        ({"mean": (0.5, 0.5)}, r"`mean`"),
    ],
)
def test_constructor_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GradCAMCallback(**kwargs)


def test_wrong_layer_name_lists_candidates(tmp_path, shapes_dm):
    cb = GradCAMCallback(target_layer="features.99")
    with pytest.raises(ValueError, match=r"`target_layer`.*features\.99") as err:
        tiny_trainer(tmp_path, [cb]).validate(ShapesCNN(), datamodule=shapes_dm)
    assert "features.8" in str(err.value)  # a real candidate is listed


class _MLP(ShapesCNN):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.mlp(x)


def test_model_without_conv_or_transformer_block(tmp_path, shapes_dm):
    cb = GradCAMCallback(num_samples=2, on_error="raise")
    with pytest.raises(ValueError, match="target_layer"):
        tiny_trainer(tmp_path, [cb]).validate(_MLP(), datamodule=shapes_dm)


class _TextModel(ShapesCNN):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, input_ids):
        return self.fc(self.emb(input_ids).mean(1))

    def validation_step(self, batch, batch_idx):
        return None


def test_non_image_inputs(tmp_path):
    ids = torch.randint(0, 20, (4, 6))
    loader = DataLoader(TensorDataset(ids, torch.tensor([0, 1, 0, 1])), batch_size=4)
    cb = GradCAMCallback(num_samples=2, on_error="raise")
    with pytest.raises(ValueError, match=r"images, video clips or spectrograms.*\(2, 6\) torch.int64.*input_key"):
        tiny_trainer(tmp_path, [cb]).validate(_TextModel(), loader)


def test_empty_validation_set(tmp_path):
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)), batch_size=4)
    cb = GradCAMCallback(num_samples=2, on_error="raise")
    trainer = tiny_trainer(tmp_path, [cb])
    with pytest.raises(ValueError, match=r"`num_samples`.*no samples"):
        cb._get_probe(SimpleNamespace(val_dataloaders=empty), "validate")  # type: ignore[arg-type]
    trainer.validate(ShapesCNN(), empty)  # Lightning skips an empty loop: no crash, nothing written
    assert not list(tmp_path.rglob("manifest.jsonl"))


class _NaNModel(ShapesCNN):
    """Its features turn NaN for the second sample: the heatmap is NaN there."""

    def forward(self, x):
        f = self.features(x)
        f = torch.cat([f[:1], f[1:2] * float("nan"), f[2:]])
        return self.head(self.pool(f).flatten(1))


def test_nan_heatmap_is_warned_and_logged_not_crashed(tmp_path):
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 2])
    cb = GradCAMCallback(probe=(x, y), on_error="raise", stages=("validate",))
    with pytest.warns(RuntimeWarning, match=r"non-finite values for probes \[1\]"):
        tiny_trainer(tmp_path, [cb]).validate(_NaNModel(), DataLoader(TensorDataset(x, y), batch_size=3))
    (step, value), = scalar_values(tmp_path, "xai/gradcam/gradcam/nonfinite")
    assert value == 32 * 32
    assert "xai/gradcam/gradcam" in read_events(tmp_path)["images"]


def _broken_forward(model, inputs):
    raise RuntimeError("explainer exploded")


def test_on_error_warn_keeps_training_and_raise_stops_it(tmp_path, shapes_dm):
    cb = GradCAMCallback(num_samples=2, forward_fn=_broken_forward)
    trainer = tiny_trainer(tmp_path / "warn", [cb], max_epochs=2)
    with pytest.warns(RuntimeWarning, match=r"(?s)GradCAMCallback failed during fit.*explainer exploded.*on_error='raise'"):
        trainer.fit(ShapesCNN(), datamodule=shapes_dm)
    assert trainer.current_epoch == 2 and trainer.global_step == 4
    cb = GradCAMCallback(num_samples=2, forward_fn=_broken_forward, on_error="raise")
    with pytest.raises(RuntimeError, match="explainer exploded"):
        tiny_trainer(tmp_path / "raise", [cb]).fit(ShapesCNN(), datamodule=shapes_dm)


def test_sharded_strategies_are_refused_in_setup():
    from lightning.pytorch.strategies import FSDPStrategy

    cb = GradCAMCallback()
    trainer = SimpleNamespace(strategy=FSDPStrategy(), log_dir=None, default_root_dir=".")
    with pytest.raises(RuntimeError, match=r"sharded strategy FSDPStrategy.*strategy='ddp'.*ModelParallelStrategy"):
        cb.setup(trainer, ShapesCNN(), "fit")  # type: ignore[arg-type]
