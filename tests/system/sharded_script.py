"""Run by tests/system/test_sharded.py in a subprocess: every callback under Lightning's ModelParallelStrategy
(FSDP2: ``fully_shard`` in ``configure_model``), 2 CPU ranks, or the same model unsharded in one process."""

from __future__ import annotations

import json
import sys

from typing import Any

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import (
    AttributionCallback,
    AttributionDriftCallback,
    CalibrationCallback,
    GradCAMCallback,
    SHAPCallback,
)
from lightning_xai.datasets import SyntheticShapesDataModule
from lightning_xai.demo import ShapesCNN


class ShardedShapesCNN(ShapesCNN):
    """ShapesCNN with every convolution and the whole model sharded by FSDP2 over the data-parallel mesh."""

    def configure_model(self) -> None:
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for module in self.modules():
            if isinstance(module, torch.nn.Conv2d):
                fully_shard(module, mesh=mesh)
        fully_shard(self, mesh=mesh)


class TensorParallelShapesCNN(ShapesCNN):
    """ShapesCNN whose head is split by tensor parallelism (refused by the callbacks, with the reason)."""

    def configure_model(self) -> None:
        from torch.distributed.tensor import Replicate
        from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

        parallelize_module(self.head, self.device_mesh["tensor_parallel"], ColwiseParallel(output_layouts=Replicate()))


def refused_tensor_parallel(out: str) -> None:
    """Validate a tensor-parallel model with Grad-CAM (on_error="raise") on 2 ranks; write what each rank raised."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    dm = SyntheticShapesDataModule(batch_size=8, num_train=16, num_val=16, image_size=32, num_classes=4)
    trainer = Trainer(accelerator="cpu", devices=2, strategy=ModelParallelStrategy(1, 2), logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[GradCAMCallback(num_samples=2, on_error="raise")])
    try:
        trainer.validate(TensorParallelShapesCNN(num_classes=4), dm)
        message = "no error"
    except RuntimeError as err:
        message = str(err)
    with open(f"{out}/refused_rank{trainer.global_rank}.txt", "w") as fh:
        fh.write(message)


class FSDPSettings(Callback):
    """Records FSDP2's settings of every parameter group after the first training step (FSDP's lazy init has run,
    no explanation yet) and at the end of fit (after two explained epochs): they must match."""

    def __init__(self) -> None:
        self.seen: list = []

    def _record(self, pl_module: Any) -> None:
        from lightning_xai.functional._fsdp import _SETTINGS, _fsdp_modules, _groups

        self.seen.append([[repr(getattr(g, name)) for name in _SETTINGS] for m in _fsdp_modules(pl_module)
                          for g in _groups(m)])

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        if not self.seen:
            self._record(pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._record(pl_module)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, devices = sys.argv[1], int(sys.argv[2])
    accelerator = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    if accelerator == "tensor_parallel":
        refused_tensor_parallel(out)
        sys.exit(0)
    seed_everything(3)
    model = ShapesCNN() if devices == 1 else ShardedShapesCNN()

    def strategy() -> object:  # a fresh one per Trainer (a strategy keeps the accelerator it was set up with)
        if devices == 1:
            return "auto"
        from lightning.pytorch.strategies import ModelParallelStrategy

        return ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1)

    dm = SyntheticShapesDataModule(batch_size=8, num_train=32, num_val=64, image_size=32)
    common = dict(accelerator=accelerator, devices=devices, enable_progress_bar=False,
                  enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    cbs = [GradCAMCallback(num_samples=4, methods=("gradcam", "scorecam"), on_error="raise"),
           CalibrationCallback(n_bins=10, gallery_size=4, on_error="raise"),
           SHAPCallback(num_samples=2, n_background=4, nsamples=8, max_nsamples=16, on_error="raise"),
           AttributionDriftCallback(num_samples=4, store=f"{out}/store.sqlite", run="validate", on_error="raise"),
           AttributionCallback(num_samples=4, methods=("integrated_gradients", "saliency", "occlusion", "lime"),
                               method_kwargs={"lime": {"n_samples": 64}}, on_error="raise")]
    trainer = Trainer(logger=TensorBoardLogger(out, name="validate"), callbacks=cbs, strategy=strategy(), **common)
    trainer.validate(model, dm)
    with open(f"{out}/callback_metrics_rank{trainer.global_rank}.json", "w") as fh:
        json.dump({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/")}, fh)
    # the public explain() outside a step, on every rank: it gathers the sharded model itself
    from lightning_xai.adapters import ModelInputs

    batch = ModelInputs((torch.stack([dm.val_dataloader().dataset[i][0] for i in range(3)]),))
    direct = GradCAMCallback(on_error="raise").explain(trainer, model, batch)  # its layer found here
    if trainer.global_rank == 0:
        torch.save(direct.maps()["input"], f"{out}/explain_direct.pt")
    # fit with and without callbacks from the same weights: the sharded training must not notice them
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    start = {k: v.clone() for k, v in ShapesCNN().state_dict().items()}
    torch.save(start, f"{out}/weights_start.pt")
    settings = FSDPSettings()
    for run, callbacks in (("bare", []), ("observed", [GradCAMCallback(num_samples=4, on_error="raise"),
                                                       SHAPCallback(num_samples=2, n_background=4, on_error="raise"),
                                                       CalibrationCallback(on_error="raise"), settings])):
        seed_everything(5)
        fitted = ShapesCNN() if devices == 1 else ShardedShapesCNN()
        fitted.load_state_dict(start)
        Trainer(logger=TensorBoardLogger(out, name=f"fit_{run}"), callbacks=callbacks, max_epochs=2,
                limit_train_batches=2, limit_val_batches=2, strategy=strategy(), **common).fit(fitted, dm)
        full = get_model_state_dict(fitted, options=StateDictOptions(full_state_dict=True, cpu_offload=True)) \
            if devices > 1 else fitted.state_dict()
        if trainer.global_rank == 0:
            torch.save({k: v.cpu() for k, v in full.items()}, f"{out}/weights_{run}.pt")
    with open(f"{out}/fsdp_settings_rank{trainer.global_rank}.json", "w") as fh:
        json.dump(settings.seen, fh)
