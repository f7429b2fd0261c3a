"""Quickstart: explain a model while it trains, then audit its checkpoint without retraining.

Trains a small CNN on synthetic shapes (the class is decided by one object whose mask is known) with
GradCAMCallback attached, then re-validates the saved checkpoint with a fresh Trainer. Runs in about a minute on 2 CPU
cores and writes TensorBoard logs under ./logs (override with --logdir).

    python examples/quickstart.py
    tensorboard --logdir logs
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import GradCAMCallback
from lightning_xai.datasets import SyntheticShapesDataModule
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    seed_everything(0)
    dm = SyntheticShapesDataModule(batch_size=32, num_train=1024, num_val=128, image_size=32, num_classes=3)
    class_names = ["square", "circle", "triangle"]

    def gradcam() -> GradCAMCallback:
        return GradCAMCallback(num_samples=8, methods=("gradcam", "gradcam++"), class_names=class_names)

    checkpoint = ModelCheckpoint(monitor="val/acc", mode="max", save_last=True)
    trainer = Trainer(max_epochs=args.epochs, logger=TensorBoardLogger(args.logdir, name="quickstart"),
                      callbacks=[gradcam(), checkpoint], accelerator="cpu", devices=1, log_every_n_steps=8)
    trainer.fit(ShapesCNN(num_classes=3), datamodule=dm)

    # The same callback on a checkpoint: no retraining, logged at the checkpoint's own epoch and step.
    audit = Trainer(logger=TensorBoardLogger(args.logdir, name="quickstart_audit"), callbacks=[gradcam()],
                    accelerator="cpu", devices=1)
    audit.validate(ShapesCNN(num_classes=3), datamodule=dm, ckpt_path=checkpoint.best_model_path)

    for name, t in (("training run", trainer), ("checkpoint audit", audit)):
        root = Path(t.log_dir) / "xai"
        rows = list(read_manifest(root / "manifest.jsonl"))
        print(f"\n{name}: TensorBoard logs in {t.log_dir}")
        print(f"  {len(rows)} explanations; arrays and PNGs under {root} (manifest: {root / 'manifest.jsonl'})")
    print(f"\nbest checkpoint: {checkpoint.best_model_path}")
    print(f"Look at them:  tensorboard --logdir {args.logdir}   (Images: xai/gradcam/*, Scalars: xai/gradcam/*)")


if __name__ == "__main__":
    main()
