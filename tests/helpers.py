"""Plain helpers shared by the test modules (fixtures and pytest hooks stay in conftest.py).

Import them as ``from tests.helpers import ...``. What lives here: the repository root, TensorBoard event reading,
the tiny Trainer, the benchmark runner, and the small data, models and constants that more than one test module
uses. A helper used by one module stays in that module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_xai.datasets import SyntheticShapes
from lightning_xai.demo import ShapesCNN

ROOT = Path(__file__).resolve().parents[1]
"""The checkout under test (examples/, callbacks/, benchmarks/, tools/ and lightning_xai/ are below it)."""


def read_events(log_dir: str | Path) -> dict[str, dict[str, list[int]]]:
    """Read every TensorBoard event file under ``log_dir`` with tensorboard's own reader.

    Returns ``{"images": {tag: [steps]}, "scalars": {tag: [steps]}, ...}``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[str, list[int]]] = {"images": {}, "scalars": {}, "histograms": {}, "tensors": {}}
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("images", []):
            out["images"].setdefault(tag, []).extend(e.step for e in acc.Images(tag))
        for tag in tags.get("scalars", []):
            out["scalars"].setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
        for tag in tags.get("histograms", []):
            out["histograms"].setdefault(tag, []).extend(e.step for e in acc.Histograms(tag))
        for tag in tags.get("tensors", []):
            out["tensors"].setdefault(tag, []).extend(e.step for e in acc.Tensors(tag))
    return out


def scalar_values(log_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    vals: list[tuple[int, float]] = []
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            vals.extend((e.step, e.value) for e in acc.Scalars(tag))
    return vals


def tiny_trainer(tmp_path: Path, callbacks: list[Any], **kw: Any) -> Any:
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    opts: dict[str, Any] = dict(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=TensorBoardLogger(str(tmp_path), name="tb"),
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        num_sanity_val_steps=0, enable_checkpointing=False, deterministic=True,
    )
    opts.update(kw)
    return Trainer(**opts)


def run_benchmark(script: str, *args: str, timeout: int = 300) -> list[str]:
    """Run ``benchmarks/<script>`` with ``args`` in a subprocess (1 thread) and return its stdout lines."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.splitlines()


def shapes_loaders(size: int = 16) -> tuple[DataLoader, DataLoader]:
    """Train (32 samples, seed 1) and validation (16 samples, seed 2) loaders of ``size``-pixel synthetic shapes."""
    return (DataLoader(SyntheticShapes(32, image_size=size, seed=1), batch_size=8),
            DataLoader(SyntheticShapes(16, image_size=size, seed=2), batch_size=8))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Deterministic model initialisation without leaking into the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tile_axes(fig: Any) -> list:
    """Axes that show an image (the colour bar's axes do not)."""
    return [ax for ax in fig.axes if ax.get_images()]


TINY_HF = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
"""The config keywords that make a Hugging Face transformer tiny (random weights, built from its config)."""

FAST = dict(nsamples=16, max_nsamples=64, n_background=8, max_batch=64)
"""SHAPCallback keywords for quick tests."""


class Tokens(Dataset):
    """Sentences of ids whose label is 1 exactly when token 7 appears; padded with 0 and an attention mask."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(10, 50, (n, 12), generator=g)
        self.labels = torch.arange(n) % 2
        self.ids[self.labels == 1, 3] = 7
        self.mask = torch.ones_like(self.ids)
        self.mask[:, 10:] = 0
        self.ids[:, 10:] = 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


class TextModel(ShapesCNN):
    """A bag-of-embeddings classifier of :class:`Tokens` (input_ids, attention_mask -> 2 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16, padding_idx=0)
        self.fc = nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask):
        e = self.emb(input_ids) * attention_mask[..., None]
        return self.fc(e.sum(1) / attention_mask.sum(1, keepdim=True))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["input_ids"], batch["attention_mask"]), batch["labels"])

    def validation_step(self, batch, batch_idx):
        return None


TINY_ATTENTION_MODELS = ("bert", "distilbert", "roberta", "vit", "deit", "ast", "whisper", "wav2vec2", "videomae",
                         "clip_vision", "clip_text", "torchvision_vit")
"""The transformers the attention tests build tiny (random weights, no downloads), by :func:`tiny_attention_model`."""


def tiny_attention_model(name: str, seed: int = 0) -> tuple[nn.Module, dict[str, Tensor]]:
    """A tiny transformer (eval mode, seeded) of one of :data:`TINY_ATTENTION_MODELS` (or ``"swin"``, ``"timesformer"``:
    attention that is not one matrix per layer) with 2 layers of 2 heads, and a batch of 2 inputs for it by keyword
    (``"x"`` for torchvision's ViT, called positionally)."""
    import transformers as hf

    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(5, 60, (2, 7), generator=g)
    text = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])}
    with seeded(seed):
        if name == "bert":
            model = hf.BertForSequenceClassification(hf.BertConfig(vocab_size=60, num_labels=2, **TINY_HF))
        elif name == "distilbert":
            model = hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
                vocab_size=60, dim=32, n_layers=2, n_heads=2, hidden_dim=37, num_labels=2))
        elif name == "roberta":
            model = hf.RobertaForSequenceClassification(hf.RobertaConfig(vocab_size=60, num_labels=2, **TINY_HF))
        elif name == "clip_text":
            model = hf.CLIPTextModelWithProjection(hf.CLIPTextConfig(
                vocab_size=60, projection_dim=8, max_position_embeddings=16, eos_token_id=3, bos_token_id=1,
                pad_token_id=0, **TINY_HF))
            ids[:, -1] = 3  # the end-of-text token CLIP pools
            ids[1, 4:] = torch.tensor([3, 0, 0])
            text = {"input_ids": ids, "attention_mask": text["attention_mask"]}
        elif name == "vit":
            model = hf.ViTForImageClassification(hf.ViTConfig(image_size=32, patch_size=8, num_labels=3, **TINY_HF))
        elif name == "deit":
            model = hf.DeiTForImageClassificationWithTeacher(hf.DeiTConfig(image_size=32, patch_size=8, num_labels=3,
                                                                           **TINY_HF))
        elif name == "clip_vision":
            model = hf.CLIPVisionModelWithProjection(hf.CLIPVisionConfig(image_size=32, patch_size=8,
                                                                         projection_dim=8, **TINY_HF))
        elif name == "ast":
            model = hf.ASTForAudioClassification(hf.ASTConfig(num_mel_bins=32, max_length=40, patch_size=16,
                                                              frequency_stride=8, time_stride=8, num_labels=3,
                                                              **TINY_HF))
        elif name == "whisper":
            model = hf.WhisperForAudioClassification(hf.WhisperConfig(
                d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1, decoder_attention_heads=2,
                encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=16, max_source_positions=20, num_labels=3,
                vocab_size=60, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1))
        elif name == "wav2vec2":
            model = hf.Wav2Vec2ForSequenceClassification(hf.Wav2Vec2Config(
                conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                num_conv_pos_embedding_groups=2, num_labels=3, vocab_size=40, **TINY_HF))
        elif name == "videomae":
            model = hf.VideoMAEForVideoClassification(hf.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4,
                                                                        tubelet_size=2, num_labels=3, **TINY_HF))
        elif name == "timesformer":  # divided space-time attention: 4 frames of 4 x 4 patches
            model = hf.TimesformerForVideoClassification(hf.TimesformerConfig(image_size=32, patch_size=8, num_frames=4,
                                                                              num_labels=3, **TINY_HF))
        elif name == "torchvision_vit":
            import torchvision

            model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                         hidden_dim=32, mlp_dim=64, num_classes=3)
            nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts the head at zero: no gradient
        elif name == "swin":
            model = hf.SwinForImageClassification(hf.SwinConfig(image_size=32, patch_size=4, embed_dim=16,
                                                                depths=[1, 1], num_heads=[2, 2], window_size=4,
                                                                num_labels=3))
        else:
            raise ValueError(f"unknown tiny attention model {name!r}")
    inputs = {
        "vit": {"pixel_values": randn(2, 3, 32, 32, seed=seed)}, "deit": {"pixel_values": randn(2, 3, 32, 32, seed=seed)},
        "clip_vision": {"pixel_values": randn(2, 3, 32, 32, seed=seed)}, "swin": {"pixel_values": randn(2, 3, 32, 32)},
        "torchvision_vit": {"x": randn(2, 3, 32, 32, seed=seed)}, "ast": {"input_values": randn(2, 40, 32, seed=seed)},
        "whisper": {"input_features": randn(2, 16, 40, seed=seed)}, "wav2vec2": {"input_values": randn(2, 400, seed=seed)},
        "videomae": {"pixel_values": randn(2, 4, 3, 32, 32, seed=seed)},
        "timesformer": {"pixel_values": randn(2, 4, 3, 32, 32, seed=seed)},
    }.get(name, text)
    return model.eval(), inputs
