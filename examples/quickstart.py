"""Quickstart: explain a model while it trains, then audit its checkpoint without retraining.

Trains a small CNN on synthetic shapes (the class is decided by one object whose mask is known) with the four
callbacks attached (Grad-CAM, SHAP, calibration, attribution drift), then re-validates the saved checkpoint with a
fresh Trainer. Runs in about a minute and a half on 2 CPU cores and writes TensorBoard logs under ./logs (override
with --logdir), and the drift store ./logs/xai_store.sqlite.

    python examples/quickstart.py
    tensorboard --logdir logs
    lightning-xai drift --store logs/xai_store.sqlite
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_xai import AttributionDriftCallback, CalibrationCallback, GradCAMCallback, SHAPCallback
from lightning_xai.datasets import SyntheticShapesDataModule
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--num-train", type=int, default=1024)
    args = parser.parse_args()
    seed_everything(0)
    dm = SyntheticShapesDataModule(batch_size=32, num_train=args.num_train, num_val=128, image_size=32,
                                   num_classes=3)
    class_names = ["square", "circle", "triangle"]
    store = str(Path(args.logdir) / "xai_store.sqlite")

    def callbacks(run: str) -> list:
        return [
            GradCAMCallback(num_samples=8, methods=("gradcam", "gradcam++"), class_names=class_names),
            SHAPCallback(num_samples=4, n_background=16, class_names=class_names),
            CalibrationCallback(n_bins=10, class_names=class_names),
            AttributionDriftCallback(num_samples=8, store=store, run=run, target="label", alert_below=0.5,
                                     class_names=class_names),
        ]

    checkpoint = ModelCheckpoint(monitor="val/acc", mode="max", save_last=True)
    training = callbacks("quickstart")
    trainer = Trainer(max_epochs=args.epochs, logger=TensorBoardLogger(args.logdir, name="quickstart"),
                      callbacks=[*training, checkpoint], accelerator="cpu", devices=1,
                      log_every_n_steps=8)
    trainer.fit(ShapesCNN(num_classes=3), datamodule=dm)

    # The same callbacks on a checkpoint: no retraining, logged at the checkpoint's own epoch and step; the drift
    # callback adds the audit to the store as a run of its own and compares it with the training run (by the name
    # that run got: "quickstart#2" when logs/ already holds an earlier "quickstart").
    audit = Trainer(logger=TensorBoardLogger(args.logdir, name="quickstart_audit"), accelerator="cpu", devices=1,
                    callbacks=[*callbacks("quickstart-audit")[:3],
                               AttributionDriftCallback(num_samples=8, store=store, run="quickstart-audit",
                                                        reference_run=training[-1].run_name, target="label")])
    audit.validate(ShapesCNN(num_classes=3), datamodule=dm, ckpt_path=checkpoint.best_model_path)

    for name, t in (("training run", trainer), ("checkpoint audit", audit)):
        root = Path(t.log_dir) / "xai"
        rows = list(read_manifest(root / "manifest.jsonl"))
        print(f"\n{name}: TensorBoard logs in {t.log_dir}")
        print(f"  {len(rows)} explanations; arrays and PNGs under {root} (manifest: {root / 'manifest.jsonl'})")
    print(f"\nbest checkpoint: {checkpoint.best_model_path}")
    print(f"Look at them:  tensorboard --logdir {args.logdir}   (Images and Scalars: xai/gradcam/*, xai/shap/*, "
          "xai/calibration/*, xai/drift/*)")
    print(f"Drift across epochs and runs:  lightning-xai drift --store {store}")


if __name__ == "__main__":
    main()
