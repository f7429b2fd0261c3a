"""Run by tests/system/test_ddp_probing.py in a subprocess: ProbingCallback under strategy="ddp", 2 CPU ranks."""

from __future__ import annotations

import json
import sys

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import ProbingCallback


class Net(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.carrier = nn.Conv1d(2, 8, 3)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv1d(8, 8, 3))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(self.carrier(x)).mean(-1))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, devices, strategy = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    seed_everything(3)
    model = Net()
    y = torch.arange(90) % 3  # 90 probe samples: 45 rows per rank
    x = torch.randn(90, 2, 12, generator=torch.Generator().manual_seed(0))
    x[:, 0, :] += y[:, None].float()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    common = {"accelerator": "cpu", "devices": devices, "strategy": strategy, "enable_progress_bar": False,
              "enable_model_summary": False, "enable_checkpointing": False, "num_sanity_val_steps": 0}
    cb = ProbingCallback(layers=("carrier", "body", "head"), cv=3, batch_size=16, on_error="raise")
    trainer = Trainer(logger=TensorBoardLogger(out, name="validate"), callbacks=[cb], **common)
    trainer.validate(model, loader)
    with open(f"{out}/callback_metrics_rank{trainer.global_rank}.json", "w") as fh:  # every rank holds the values
        json.dump({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/")}, fh)
    fit_cb = ProbingCallback(layers=("carrier", "head"), pooling="flatten", max_features=24, cv=3, on_error="raise")
    Trainer(logger=TensorBoardLogger(out, name="fit"), callbacks=[fit_cb], max_epochs=2, limit_train_batches=2,
            **common).fit(model, loader, loader)
