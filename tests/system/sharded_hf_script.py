"""Run by tests/system/test_sharded.py: a tiny Hugging Face ViT sharded by FSDP2 (each encoder layer and the root),
validated with AttentionCallback (raw weights: the model switched to eager attention for the capture), SHAP and
integrated gradients / saliency, on 2 CPU ranks or unsharded in one process."""
from __future__ import annotations

import json
import sys

import lightning as L
import torch
import transformers as hf
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttentionCallback, AttributionCallback, SHAPCallback

class ShardedViT(L.LightningModule):
    """A 2-layer ViT classifier; ``configure_model`` shards it when a device mesh is there (ModelParallelStrategy)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.vit = hf.ViTForImageClassification(hf.ViTConfig(image_size=32, patch_size=8, num_labels=3, hidden_size=32,
            num_hidden_layers=2, num_attention_heads=2, intermediate_size=37))
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=pixel_values).logits
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self(x), y), sync_dist=True)
    def configure_model(self) -> None:
        if getattr(self, "device_mesh", None) is None:
            return
        from torch.distributed.fsdp import fully_shard
        mesh = self.device_mesh["data_parallel"]
        for layer in self.vit.vit.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, devices = sys.argv[1], int(sys.argv[2])
    g = torch.Generator().manual_seed(1)
    ds = TensorDataset(torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 3, (16,), generator=g))
    strategy = ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1) if devices > 1 else "auto"
    cbs = [AttentionCallback(num_samples=4, on_error="raise"),
           SHAPCallback(num_samples=2, n_background=4, on_error="raise"),
           AttributionCallback(num_samples=4, methods=("integrated_gradients", "saliency"), on_error="raise")]
    t = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=L.pytorch.loggers.TensorBoardLogger(out),
                  callbacks=cbs, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    t.validate(ShardedViT(), DataLoader(ds, batch_size=8))
    if t.global_rank == 0:
        with open(f"{out}/metrics.json", "w") as fh:
            json.dump({k: float(v) for k, v in t.callback_metrics.items()
                       if k.startswith("xai/") and not k.endswith("seconds")}, fh)
