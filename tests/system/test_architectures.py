"""Issue 12 acceptance: real architectures (from their configs, random weights) fit for one epoch with every
applicable callback, then re-validated from the checkpoint by a fresh Trainer: the layer chosen, no flat map, and
the audit's explanations equal the fit's (same weights, probe and SHAP background from the checkpoint).

Video (R3D-18, VideoMAE), spectrogram (AST, Whisper) and CLIP-with-text runs of GradCAMCallback are in
tests/system/test_architectures_gradcam.py; the layer chosen on 25 architectures in
tests/functional/test_layer_search.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionDriftCallback, CalibrationCallback, GradCAMCallback, SHAPCallback
from lightning_xai.sinks.files import read_manifest
from tests.helpers import TINY_HF

torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow


class _Classifier(LightningModule):
    """A backbone wrapped the way users write it: forward gives logits, cross-entropy, Adam."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.net = make()

    def forward(self, x):
        out = self.net(x)
        return out if isinstance(out, torch.Tensor) else out.logits

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _data(shape: tuple[int, ...], tokens: bool = False) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(3, 50, (16, *shape), generator=gen) if tokens else torch.randn(16, *shape, generator=gen)
    return DataLoader(TensorDataset(x, torch.arange(16) % 3), batch_size=8)


# name -> (backbone factory, one input's shape, token ids?, the Grad-CAM layer or None for no Grad-CAM)
MODELS: dict[str, tuple[Any, tuple[int, ...], bool, str | None]] = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=3), (3, 64, 64), False, "net.layer4.1"),
    "hf_vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, num_labels=3, **TINY_HF)), (3, 32, 32), False,
        "net.vit.layers.1.layernorm_before"),
    "hf_dinov2": (lambda: transformers.Dinov2ForImageClassification(transformers.Dinov2Config(
        image_size=32, patch_size=8, num_labels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)),
        (3, 32, 32), False, "net.dinov2.encoder.layer.1.norm1"),
    "hf_bert": (lambda: transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=50, max_position_embeddings=16, num_labels=3, **TINY_HF)), (12,), True, None),
    "hf_ast": (lambda: transformers.ASTForAudioClassification(transformers.ASTConfig(
        patch_size=16, frequency_stride=10, time_stride=10, max_length=56, num_mel_bins=36, num_labels=3, **TINY_HF)),
        (56, 36), False, "net.audio_spectrogram_transformer.layers.1.layernorm_before"),  # (frames, mel)
}
_SHAP_ARGS = {"n_background": 4, "nsamples": 8, "completeness_tol": None}


def _drift_method(shape: tuple[int, ...], tokens: bool) -> str:
    return "gradcam" if not tokens and len(shape) in (3, 4) else "shap"  # images and clips; else SHAP


def _callbacks(root: Path, layer: str | None, drift_method: str) -> list[Any]:
    cbs: list[Any] = [
        SHAPCallback(num_samples=2, n_background=4, nsamples=8, completeness_tol=None, on_error="raise"),
        CalibrationCallback(n_bins=5, gallery_size=0, on_error="raise"),
        AttributionDriftCallback(num_samples=2, store=str(root / "store.sqlite"), on_error="raise",
                                 method_kwargs=_SHAP_ARGS if drift_method == "shap" else None),
    ]
    return cbs + ([GradCAMCallback(num_samples=2, on_error="raise")] if layer is not None else [])


def _trainer(root: Path, callbacks: list[Any], **kw: Any) -> Trainer:
    return Trainer(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=str(root), callbacks=callbacks,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   limit_train_batches=1, **kw)


def _arrays(root: Path, callback: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for record in read_manifest(root / "xai" / "manifest.jsonl"):
        if record["callback"] == callback:
            for f in record["files"]:
                if f.endswith(".npy"):
                    out[Path(f).name] = np.load(root / "xai" / f)
                elif f.endswith(".npz"):
                    with np.load(root / "xai" / f) as z:
                        out.update({k: z[k] for k in z.files})
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_then_audit_from_the_checkpoint(name, tmp_path):
    make, shape, tokens, layer = MODELS[name]
    torch.set_num_threads(1)
    loader = _data(shape, tokens)
    seed_everything(0)
    fit_root, audit_root = tmp_path / "fit", tmp_path / "audit"
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    method = _drift_method(shape, tokens)
    _trainer(fit_root, [*_callbacks(fit_root, layer, method), ckpt]).fit(_Classifier(make), loader, loader)
    seed_everything(1)  # another init: the audit must take everything from the checkpoint
    _trainer(audit_root, _callbacks(fit_root, layer, method), enable_checkpointing=False).validate(
        _Classifier(make), loader, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), verbose=False)

    fit = list(read_manifest(fit_root / "xai" / "manifest.jsonl"))
    audit = list(read_manifest(audit_root / "xai" / "manifest.jsonl"))
    assert {r["callback"] for r in audit} == {r["callback"] for r in fit}
    assert all(r["global_step"] == 1 for r in audit)  # logged at the checkpoint's step
    if layer is not None:
        (record,) = [r for r in fit if r["callback"] == "gradcam"]
        assert record["layer"] == layer and record["scalars"]["xai/gradcam/gradcam/flat"] == 0.0
    drift = next(r for r in fit if r["callback"] == "drift")
    assert drift["method"] == method  # method="auto": Grad-CAM for images and clips, SHAP otherwise
    for callback in ("gradcam", "shap"):  # audit = fit
        a, b = _arrays(fit_root, callback), _arrays(audit_root, callback)
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=f"{name} {callback} {key}")
    ece = [next(r for r in rs if r["callback"] == "calibration")["scalars"]["xai/calibration/ece"] for rs in (fit, audit)]
    assert ece[0] == pytest.approx(ece[1], abs=1e-6)


def test_shap_draws_frames_first_spectrograms_time_right(tmp_path, monkeypatch):
    """AST takes (frames, mel): SHAP's figure must still put time right and frequency up (it drew them swapped)."""
    import lightning_xai.render as render

    drawn: list[tuple[int, ...]] = []
    real = render.spectrogram_plot
    monkeypatch.setattr(render, "spectrogram_plot", lambda x, v, **kw: drawn.append(tuple(x.shape)) or real(x, v, **kw))
    make, shape, _, _ = MODELS["hf_ast"]
    loader = _data(shape)
    seed_everything(0)
    cb = SHAPCallback(num_samples=2, n_background=4, nsamples=8, completeness_tol=None, on_error="raise")
    _trainer(tmp_path, [cb], enable_checkpointing=False).fit(_Classifier(make), loader, loader)
    assert drawn == [(2, 36, 56)]  # (probes, mel, frames) from a (probes, 56 frames, 36 mel) input
