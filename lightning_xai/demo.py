"""Small reference models for the synthetic datasets: the quickstart's model and a sanity-check baseline.

Train :class:`ShapesCNN` on :class:`~lightning_xai.datasets.SyntheticShapes` and an explainer must point at the
decisive object; randomise its weights and it must stop doing so.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_xai._checks import check_positive_int

__all__ = ["ShapesCNN"]


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
