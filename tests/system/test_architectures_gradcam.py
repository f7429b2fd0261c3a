"""Issue 12, end to end: GradCAMCallback on real architectures (built from configs, random weights) under a tiny Trainer.

CLIP with its texts in the batch (3), AST spectrograms (4), VideoMAE clips (5), torchvision R3D-18; the layer and
reshape recorded in the manifest, no flat map; a reshape given by dotted path and keyword arguments, as YAML does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import GradCAMCallback
from lightning_xai.sinks.files import read_manifest
from tests.helpers import TINY_HF

torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")


class _Wrapped(LightningModule):
    """A model as users wrap one: ``forward(**batch inputs)``, cross-entropy on ``labels``."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, **inputs: torch.Tensor) -> Any:
        out = self.model(**inputs)
        return out if isinstance(out, torch.Tensor) else out.logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return nn.functional.cross_entropy(self(**inputs), batch["labels"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        return None

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _CLIPWithTexts(_Wrapped):
    """CLIP scoring each image against the batch's texts: its output is CLIP's (``logits_per_image``)."""

    def forward(self, **inputs: torch.Tensor) -> Any:
        return self.model(**inputs)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"])
        return nn.functional.cross_entropy(out.logits_per_image, torch.arange(len(batch["labels"])))


def _items(n: int, **shapes: tuple[int, ...]) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        item = {k: torch.randint(0, 50, s, generator=gen) if k == "input_ids" else torch.randn(*s, generator=gen)
                for k, s in shapes.items()}
        items.append({**item, "labels": torch.tensor(i % 3)})
    return items


def _fit(tmp_path: Path, module: LightningModule, items: list[dict[str, torch.Tensor]], **kw: Any) -> dict[str, Any]:
    seed_everything(0)
    loader = DataLoader(items, batch_size=len(items))
    cb = GradCAMCallback(num_samples=len(items), on_error="raise", **kw)
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                      limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[cb])
    trainer.fit(module, loader, loader)
    (record,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
    assert record["scalars"]["xai/gradcam/gradcam/flat"] == 0.0 and record["scalars"]["xai/gradcam/gradcam/nonfinite"] == 0
    folder = next((tmp_path / "xai" / "gradcam").glob("fit-*"))
    summary = json.loads((folder / "summary_gradcam.json").read_text())
    assert summary["flat"] == [False] * len(items) and summary["reshape"] == record["reshape"]
    assert list(folder.glob("*.png"))  # the figure was drawn
    return {"record": record, "summary": summary, "folder": folder}


def _hf(name: str, config: str, **kw: Any) -> nn.Module:
    torch.manual_seed(0)
    return getattr(transformers, name)(getattr(transformers, config)(**kw))


def test_clip_with_texts_in_the_batch(tmp_path):
    text = dict(TINY_HF, vocab_size=50, max_position_embeddings=16)
    clip = _hf("CLIPModel", "CLIPConfig", text_config=text, vision_config=dict(TINY_HF, image_size=32, patch_size=8),
               projection_dim=16)
    out = _fit(tmp_path, _CLIPWithTexts(clip, "pixel_values"), _items(3, pixel_values=(3, 32, 32), input_ids=(7,)))
    assert out["record"]["layer"] == "model.vision_model.encoder.layers.1.layer_norm1"
    assert "num_prefix_tokens=1" in out["record"]["reshape"]


def test_ast_spectrograms_time_by_frequency(tmp_path):
    ast = _hf("ASTForAudioClassification", "ASTConfig", patch_size=16, frequency_stride=10, time_stride=10,
              max_length=56, num_mel_bins=36, num_labels=3, **TINY_HF)
    out = _fit(tmp_path, _Wrapped(ast, "input_values"), _items(3, input_values=(56, 36)))  # (frames, mel)
    assert out["record"]["layer"] == "model.audio_spectrogram_transformer.layers.1.layernorm_before"
    assert "token_reshape_transform" in out["record"]["reshape"] and "axes=(1, 0)" in out["record"]["reshape"]
    import numpy as np

    assert np.load(out["folder"] / "gradcam_gradcam.npy").shape == (3, 56, 36)  # shaped like the input


def test_whisper_encoder_frames(tmp_path):
    whisper = _hf("WhisperForAudioClassification", "WhisperConfig", d_model=32, encoder_layers=2,
                  encoder_attention_heads=2, encoder_ffn_dim=37, decoder_layers=1, decoder_attention_heads=2,
                  decoder_ffn_dim=37, num_mel_bins=20, max_source_positions=16, num_labels=3)
    out = _fit(tmp_path, _Wrapped(whisper, "input_features"), _items(3, input_features=(20, 32)))  # (mel, frames)
    assert out["record"]["layer"] == "model.encoder.layers.1.self_attn_layer_norm"


def test_videomae_clips(tmp_path):
    videomae = _hf("VideoMAEForVideoClassification", "VideoMAEConfig", image_size=32, patch_size=8, num_frames=4,
                   tubelet_size=2, num_labels=3, **TINY_HF)
    out = _fit(tmp_path, _Wrapped(videomae, "pixel_values"), _items(3, pixel_values=(4, 3, 32, 32)))
    assert out["record"]["layer"] == "model.videomae.encoder.layer.1.layernorm_before"
    assert "video_reshape_transform" in out["record"]["reshape"] and "grid=(2, 4, 4)" in out["record"]["reshape"]


class _Clips(_Wrapped):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.model(pixel_values)


def test_torchvision_r3d_18(tmp_path):
    torch.manual_seed(0)
    r3d = torchvision.models.video.r3d_18(num_classes=3)
    out = _fit(tmp_path, _Clips(r3d, "pixel_values"), _items(2, pixel_values=(3, 4, 32, 32)))
    assert out["record"]["layer"] == "model.layer4.1.relu" and out["record"]["reshape"] is None


def test_a_reshape_by_dotted_path_and_keywords(tmp_path):
    vit = _hf("ViTForImageClassification", "ViTConfig", image_size=32, patch_size=8, num_labels=3, **TINY_HF)
    out = _fit(tmp_path, _Wrapped(vit, "pixel_values"), _items(2, pixel_values=(3, 32, 32)),
               target_layer="model.vit.layers.1.layernorm_before",
               reshape_transform="lightning_xai.functional.token_reshape_transform",
               reshape_kwargs={"grid": [4, 4], "num_prefix_tokens": 1})  # as YAML writes them
    assert out["record"]["reshape"] == ("lightning_xai.functional._reshape.token_reshape_transform(grid=(4, 4), "
                                        "num_prefix_tokens=1)")


def test_r3d_18_avgpool_given_explicitly_is_said_flat(tmp_path):
    torch.manual_seed(0)
    module = _Clips(torchvision.models.video.r3d_18(num_classes=3), "pixel_values")
    loader = DataLoader(_items(2, pixel_values=(3, 4, 32, 32)), batch_size=2)
    cb = GradCAMCallback(num_samples=2, target_layer="model.avgpool", on_error="raise")  # (B, 512, 1, 1, 1)
    trainer = Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                      limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[cb])
    with pytest.warns(RuntimeWarning, match=r"layer 'model.avgpool' are flat.*`target_layer=`.*model.layer4"):
        trainer.fit(module, loader, loader)
    (record,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
    assert record["scalars"]["xai/gradcam/gradcam/flat"] == 1.0 and record["layer"] == "model.avgpool"
