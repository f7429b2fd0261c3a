"""Issue 12 points 6 and 8: Hugging Face output heads (CLIP's logits_per_image, CTC frame logits)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionDriftCallback, CalibrationCallback, SHAPCallback
from lightning_xai.adapters import ctc_best_path_score, logits_from_output, mean_over_frames, resolve_targets
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.functional.calibration import _calibration_update_step, calibration_state
from lightning_xai.sinks.files import read_manifest

transformers = pytest.importorskip("transformers")


def _trainer(root, callbacks) -> Trainer:
    return Trainer(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=str(root), callbacks=callbacks,
                   enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                   num_sanity_val_steps=0, limit_train_batches=1, limit_val_batches=1)


class _Wrapped(LightningModule):
    """A Hugging Face model wrapped the way users write it: forward returns the model's own output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        return self(batch[0])[self.head].float().mean()  # a stand-in loss: the tests are about the outputs

    def validation_step(self, batch, batch_idx):
        return self.returns(self(batch[0])) if hasattr(self, "returns") else None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class _CLIPClassifier(_Wrapped):
    """Images classified against three fixed class prompts (zero-shot style): CLIPOutput has no `logits`."""

    head = "logits_per_image"

    def __init__(self) -> None:
        config = transformers.CLIPConfig(
            text_config={"vocab_size": 50, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "max_position_embeddings": 16},
            vision_config={"image_size": 16, "patch_size": 4, "hidden_size": 32, "intermediate_size": 37,
                           "num_hidden_layers": 2, "num_attention_heads": 2},
            projection_dim=16)
        super().__init__(transformers.CLIPModel(config))
        self.register_buffer("prompts", torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2], [1, 9, 10, 2]]))

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values, input_ids=self.prompts)


class _CTC(_Wrapped):
    head = "logits"

    def __init__(self) -> None:
        config = transformers.Wav2Vec2Config(
            vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer")
        super().__init__(transformers.Wav2Vec2ForCTC(config))

    def forward(self, waveform):
        return self.model(waveform)


def _waves() -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 800, generator=gen), torch.randint(0, 12, (8,), generator=gen))
    return DataLoader(data, batch_size=4)


def test_clip_scores_images_against_its_texts_by_default(tmp_path):
    seed_everything(0)
    loader = DataLoader(SyntheticShapes(8, image_size=16, seed=1), batch_size=4)
    model = _CLIPClassifier()
    out = model(next(iter(loader))[0])
    assert torch.equal(logits_from_output(out), out.logits_per_image)  # today: refused, no `logits` entry
    callbacks = [CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise"),
                 SHAPCallback(num_samples=2, n_background=2, nsamples=4, completeness_tol=None, on_error="raise")]
    _trainer(tmp_path, callbacks).fit(model, loader, loader)
    records = list(read_manifest(tmp_path / "xai" / "manifest.jsonl"))
    assert {r["callback"] for r in records} == {"calibration", "shap"}


@pytest.mark.parametrize("make", [
    lambda: CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise"),
    lambda: SHAPCallback(num_samples=2, n_background=2, nsamples=4, completeness_tol=None, on_error="raise"),
])
def test_frame_logits_say_how_to_set_output_or_target(make, tmp_path):
    seed_everything(0)
    cb = make()
    with pytest.raises(ValueError, match=r"shape \(\d, \d+, 12\).*`output=`") as err:
        _trainer(tmp_path, [cb]).fit(_CTC(), _waves(), _waves())
    assert "preds" not in str(err.value)  # not the functional API's internal name
    assert ("ctc_best_path_score" in str(err.value)) == isinstance(cb, SHAPCallback)  # target= for attributions


def test_frame_logits_work_with_output_or_target(tmp_path):
    seed_everything(0)
    callbacks = [CalibrationCallback(n_bins=5, gallery_size=0, output="lightning_xai.adapters.mean_over_frames",
                                     on_error="raise"),
                 SHAPCallback(num_samples=2, n_background=2, nsamples=4, completeness_tol=None,
                              target="lightning_xai.adapters.ctc_best_path_score", on_error="raise")]
    _trainer(tmp_path, callbacks).fit(_CTC(), _waves(), _waves())
    records = list(read_manifest(tmp_path / "xai" / "manifest.jsonl"))
    assert {r["callback"] for r in records} == {"calibration", "shap"}
    shap = next(r for r in records if r["callback"] == "shap")
    assert shap["scalars"]["xai/shap/nonfinite"] == 0


def test_the_helpers():
    logits = torch.randn(2, 5, 4)
    torch.testing.assert_close(mean_over_frames(logits), logits.mean(1))
    torch.testing.assert_close(ctc_best_path_score({"logits": logits}), logits.log_softmax(-1).amax(-1).sum(1))
    with pytest.raises(ValueError, match="`output`"):
        mean_over_frames(torch.zeros(2, 3))


def test_resolve_targets_refuses_frame_logits():
    logits = torch.randn(2, 7, 12)  # before: "pred" took the argmax over frames x vocabulary, silently
    for target in ("pred", "label", 3):
        with pytest.raises(ValueError, match=r"`target=.*shape \(2, 7, 12\).*`output=`.*ctc_best_path_score"):
            resolve_targets(logits, target, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\): scores per position, like a segmentation head"):
        resolve_targets(torch.randn(2, 3, 4, 4), "pred")


def test_drift_on_frame_logits_says_how_to_set_output_or_target(tmp_path):
    seed_everything(0)
    cb = AttributionDriftCallback(method="shap", store=str(tmp_path / "store.sqlite"), num_samples=2,
                                  method_kwargs={"n_background": 2, "nsamples": 4}, on_error="raise")
    with pytest.raises(ValueError, match=r"shape \(\d, \d+, 12\).*`output=`.*`target=`"):
        _trainer(tmp_path, [cb]).fit(_CTC(), _waves(), _waves())


@pytest.mark.parametrize("source", ["auto", "outputs"])
def test_calibration_on_frame_logits_returned_by_validation_step(source, tmp_path):
    """validation_step returns the (batch, frames, vocab) logits: `output=` must still be the way out."""
    seed_everything(0)
    model = _CTC()
    model.returns = lambda out: out.logits  # before: preferred over the forward pass, so `output=` never applied
    cb = CalibrationCallback(n_bins=5, gallery_size=0, source=source, output=mean_over_frames, on_error="raise")
    if source == "outputs":
        with pytest.raises(ValueError, match=r"`source`.*'forward'.*`output=`.*shape \(4, \d+, 12\)"):
            _trainer(tmp_path, [cb]).fit(model, _waves(), _waves())
        return
    _trainer(tmp_path, [cb]).fit(model, _waves(), _waves())
    assert [r["callback"] for r in read_manifest(tmp_path / "xai" / "manifest.jsonl")] == ["calibration"]


def test_calibration_shape_errors_name_the_callback_arguments(tmp_path):
    seed_everything(0)
    loader = DataLoader(SyntheticShapes(8, image_size=16, seed=1), batch_size=4)
    head = lambda out: out.logits_per_image[:, 0]
    cb = CalibrationCallback(n_bins=5, gallery_size=0, task="multiclass", output=head, on_error="raise")
    with pytest.raises(ValueError, match=r"argument `output` .* task='multiclass', but got \(4,\)") as err:
        _trainer(tmp_path, [cb]).fit(_CLIPClassifier(), loader, loader)
    assert "preds" not in str(err.value)  # before: "Expected argument `preds` ..."
    cb = CalibrationCallback(n_bins=5, gallery_size=0, task="binary", on_error="raise")
    with pytest.raises(ValueError, match=r"argument `task` .*shape \(4, 3\).*but got 'binary'"):
        _trainer(tmp_path / "b", [cb]).fit(_CLIPClassifier(), loader, loader)


def test_the_functional_api_keeps_its_names_and_says_to_reduce():
    state = calibration_state(5, num_classes=12)
    with pytest.raises(ValueError, match=r"`preds` .*reduce frame-wise .*but got \(2, 7, 12\)"):
        _calibration_update_step(state, torch.randn(2, 7, 12), torch.tensor([1, 2]), "multiclass")
