"""GradCAMCallback end to end with a real Trainer; TensorBoard event files are read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_xai import GradCAMCallback
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest
from tests.helpers import read_events, tiny_trainer


def _manifest(tmp_path: Path) -> list[dict]:
    return [r for m in tmp_path.rglob("manifest.jsonl") for r in read_manifest(m)]


def test_fit_logs_overlays_scores_and_arrays(tmp_path, shapes_dm):
    seed_everything(0)
    cb = GradCAMCallback(num_samples=6, methods=("gradcam", "gradcam++"), on_error="raise")
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=2)
    trainer.fit(ShapesCNN(), datamodule=shapes_dm)  # default Trainer(inference_mode=True)
    ev = read_events(tmp_path)
    assert set(ev["images"]) >= {"xai/gradcam/gradcam", "xai/gradcam/gradcam++"}
    assert ev["images"]["xai/gradcam/gradcam"] == [2, 4]  # one grid per validation epoch, at the global step
    for tag in ("gradcam/pointing_game", "gradcam/energy_in_mask", "gradcam++/pointing_game"):
        assert f"xai/gradcam/{tag}" in ev["scalars"]
    records = _manifest(tmp_path)
    assert [(r["method"], r["epoch"], r["global_step"], r["stage"]) for r in records] == [
        ("gradcam", 0, 2, "fit"), ("gradcam++", 0, 2, "fit"), ("gradcam", 1, 4, "fit"), ("gradcam++", 1, 4, "fit")]
    root = next(tmp_path.rglob("manifest.jsonl")).parent
    arr = np.load(root / records[-1]["files"][[f.endswith(".npy") for f in records[-1]["files"]].index(True)])
    assert arr.shape == (6, 32, 32) and np.isfinite(arr).all() and arr.max() <= 1 + 1e-6
    assert len({r["model_hash"] for r in records}) == 2  # weights changed between the epochs
    summary = json.loads(next(root.rglob("summary_gradcam.json")).read_text())
    assert len(summary["dataset_index"]) == 6 and summary["dataset_index"] == sorted(summary["dataset_index"])
    trues = [t.split("true: ")[1].split(" |")[0] for t in summary["titles"]]
    assert sorted(trues) == ["circle", "circle", "square", "square", "triangle", "triangle"] or sorted(
        trues) == ["0", "0", "1", "1", "2", "2"]  # class-balanced probe


def test_validate_from_checkpoint_logs_at_checkpoint_step_with_same_probe(tmp_path, shapes_dm):
    seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_cb = GradCAMCallback(num_samples=4, on_error="raise")
    tiny_trainer(tmp_path / "fit", [fit_cb, ckpt], max_epochs=2, limit_train_batches=3,
                 enable_checkpointing=True).fit(ShapesCNN(), datamodule=shapes_dm)
    ckpt_path = tmp_path / "ckpt" / "last.ckpt"
    val_cb = GradCAMCallback(num_samples=4, on_error="raise")
    trainer = tiny_trainer(tmp_path / "audit", [val_cb])
    trainer.validate(ShapesCNN(), datamodule=shapes_dm, ckpt_path=str(ckpt_path))
    ev = read_events(tmp_path / "audit")
    assert ev["images"]["xai/gradcam/gradcam"] == [6]  # the checkpoint's own step, not 0
    rec = _manifest(tmp_path / "audit")[0]
    assert (rec["stage"], rec["epoch"], rec["global_step"]) == ("validate", 1, 6)
    assert rec["ckpt_path"] == str(ckpt_path.resolve())
    assert val_cb._probe is not None and val_cb._probe.indices == fit_cb._probe.indices
    assert torch.equal(val_cb._probe.batch[0], fit_cb._probe.batch[0])
    fit_rec = _manifest(tmp_path / "fit")[-1]
    assert fit_rec["model_hash"] == rec["model_hash"]  # the audited weights are the last fitted ones


def test_test_stage_and_inference_mode_off(tmp_path, shapes_dm):
    cb = GradCAMCallback(num_samples=3, methods="layercam", on_error="raise")
    trainer = tiny_trainer(tmp_path, [cb], inference_mode=False)
    trainer.test(ShapesCNN(), datamodule=shapes_dm)
    assert "xai/gradcam/layercam" in read_events(tmp_path)["images"]


def test_every_n_epochs_and_stages(tmp_path, shapes_dm):
    cb = GradCAMCallback(num_samples=2, every_n_epochs=2, stages=("fit",), on_error="raise")
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=4, limit_train_batches=1)
    trainer.fit(ShapesCNN(), datamodule=shapes_dm)
    trainer.validate(ShapesCNN(), datamodule=shapes_dm)  # "validate" not in stages: nothing
    assert [r["epoch"] for r in _manifest(tmp_path)] == [1, 3]


def test_two_instances_keep_separate_state(tmp_path, shapes_dm):
    a = GradCAMCallback(num_samples=2, methods="gradcam", on_error="raise")
    b = GradCAMCallback(num_samples=3, methods="hirescam", on_error="raise")
    assert a.state_key != b.state_key
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    tiny_trainer(tmp_path, [a, b, ckpt], enable_checkpointing=True).fit(ShapesCNN(), datamodule=shapes_dm)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["callbacks"]
    assert len(state[a.state_key]["probe"]["indices"]) == 2
    assert len(state[b.state_key]["probe"]["indices"]) == 3


def test_user_probe_keeps_order_and_other_loggers_get_files(tmp_path):
    x = torch.randn(5, 3, 16, 16)
    y = torch.tensor([2, 0, 1, 0, 2])
    cb = GradCAMCallback(probe=(x, y), methods="gradcam", class_names=["square", "circle", "triangle"],
                         on_error="raise", stages=("validate",))
    trainer = tiny_trainer(tmp_path, [cb], logger=CSVLogger(str(tmp_path)))
    from torch.utils.data import DataLoader, TensorDataset

    with pytest.warns(UserWarning, match="CSVLogger cannot receive images"):
        trainer.validate(ShapesCNN(), DataLoader(TensorDataset(x, y), batch_size=5))
    rec = _manifest(tmp_path)[0]
    assert any(f.endswith(".png") for f in rec["files"])
    summary = json.loads(next(tmp_path.rglob("summary_gradcam.json")).read_text())
    assert [t.split("true: ")[1].split(" |")[0] for t in summary["titles"]] == [
        "triangle", "square", "circle", "square", "triangle"]
    assert "xai/gradcam/gradcam/nonfinite" in (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()


class _DictModel(ShapesCNN):
    """A model fed dict batches and returning a dict, like Hugging Face image classifiers."""

    def forward(self, pixel_values: torch.Tensor) -> dict:  # type: ignore[override]
        return {"logits": super().forward(pixel_values), "hidden": pixel_values.mean()}

    def _step(self, batch, stage):
        return nn.functional.cross_entropy(self(batch["pixel_values"])["logits"], batch["labels"])


def test_dict_batches_and_dict_outputs(tmp_path):
    from lightning_xai.datasets import SyntheticShapesDataModule

    dm = SyntheticShapesDataModule(batch_size=8, num_train=16, num_val=8, num_test=8, image_size=32, return_dict=True)
    cb = GradCAMCallback(num_samples=4, target="label", on_error="raise", stages=("validate",))
    tiny_trainer(tmp_path, [cb]).validate(_DictModel(), datamodule=dm)
    ev = read_events(tmp_path)
    assert "xai/gradcam/gradcam" in ev["images"] and "xai/gradcam/gradcam/pointing_game" in ev["scalars"]


def score_of_class_one(output: torch.Tensor) -> torch.Tensor:
    """A callable target: one scalar per sample (here the margin of class 1)."""
    return output[:, 1] - output[:, 0]


def test_callable_target_by_dotted_path(tmp_path, shapes_dm):
    cb = GradCAMCallback(num_samples=2, target="tests.callbacks.test_callback_gradcam.score_of_class_one",
                         on_error="raise", stages=("validate",))
    tiny_trainer(tmp_path, [cb]).validate(ShapesCNN(), datamodule=shapes_dm)
    assert "xai/gradcam/gradcam" in read_events(tmp_path)["images"]


class _Video3D(ShapesCNN):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):  # x: (B, C, T, H, W)
        return self.fc(self.net(x).mean((2, 3, 4)))


def test_video_gives_one_map_per_frame(tmp_path):
    from lightning_xai.datasets import SyntheticShapesVideo

    ds = SyntheticShapesVideo(num_samples=4, image_size=16, num_frames=4, channels_first_time=True)
    clips = torch.stack([ds[i][0] for i in range(4)])
    labels = torch.stack([ds[i][1] for i in range(4)])
    masks = torch.stack([ds[i][2] for i in range(4)])
    cb = GradCAMCallback(probe=(clips, labels, masks), on_error="raise", stages=("validate",))
    from torch.utils.data import DataLoader, TensorDataset

    tiny_trainer(tmp_path, [cb]).validate(_Video3D(), DataLoader(TensorDataset(clips, labels), batch_size=4))
    root = next(tmp_path.rglob("manifest.jsonl")).parent
    npy = next(root.rglob("gradcam_gradcam.npy"))
    assert np.load(npy).shape == (4, 4, 16, 16)
    assert "xai/gradcam/gradcam/pointing_game" in read_events(tmp_path)["scalars"]


class _Spectrogram(ShapesCNN):
    """A CNN over (B, mel, frames) spectrograms, with the clip's length as an integer input beside them."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, input_features, lengths=None):  # type: ignore[override]
        return self.fc(self.net(input_features.unsqueeze(1)).amax((2, 3)))

    def _step(self, batch, stage):
        return nn.functional.cross_entropy(self(batch["input_features"]), batch["labels"])


def _spectrogram_loader():
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(0)
    items = [{"input_features": torch.randn(12, 20, generator=gen), "lengths": torch.tensor(20),
              "labels": torch.tensor(i % 3)} for i in range(4)]
    return DataLoader(items, batch_size=4)


@pytest.mark.parametrize("input_key", [None, "input_features"])
def test_spectrograms_are_explained_time_by_frequency(tmp_path, input_key):
    cb = GradCAMCallback(num_samples=4, input_key=input_key, on_error="raise", stages=("validate",))
    tiny_trainer(tmp_path, [cb]).validate(_Spectrogram(), _spectrogram_loader())  # today: "Set `input_key=`"
    (rec,) = _manifest(tmp_path)
    assert rec["layer"] == "net.3" and rec["scalars"]["xai/gradcam/gradcam/flat"] == 0.0
    assert np.load(next(tmp_path.rglob("gradcam_gradcam.npy"))).shape == (4, 12, 20)  # shaped like the input


def test_an_input_key_that_is_no_image_clip_or_spectrogram_is_said(tmp_path):
    cb = GradCAMCallback(num_samples=4, input_key="lengths", on_error="raise", stages=("validate",))
    with pytest.raises(ValueError, match=r"input 'lengths' is not one.*lengths: \(4,\) torch.int64.*`input_key=`"):
        tiny_trainer(tmp_path, [cb]).validate(_Spectrogram(), _spectrogram_loader())
