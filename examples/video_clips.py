"""Video: explain a 3D-conv clip classifier while it trains, frame by frame, against the moving shape's mask.

    python examples/video_clips.py
    tensorboard --logdir logs

The data (``SyntheticShapesVideo``) are clips of 6 frames (32 x 32) in which one shape (square, circle, triangle:
the class) moves in a straight line past a static distractor bar; each clip carries the shape's mask in every
frame. The clips come as ``(3, T, H, W)``, the layout of 3D CNNs, and a small 3D-conv network classifies them.
GradCAMCallback(video_layout="BCTHW") draws one Grad-CAM map per frame as frame strips (``xai/gradcam/gradcam``,
with ``xai/gradcam/gradcam/pointing_game`` and ``.../energy_in_mask`` against the masks), SHAPCallback draws the
signed SHAP values as frame strips (``xai/shap/pixel_values``), CalibrationCallback the reliability diagram. At
the end the example prints, per frame, the share of the Grad-CAM energy that lies inside the moving shape's mask,
next to the mask's share of the frame: a model that follows the shape puts far more than the area share there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_xai import CalibrationCallback, GradCAMCallback, SHAPCallback
from lightning_xai.datasets import SyntheticShapesVideo

FRAMES = 6


class ClipCNN(LightningModule):
    """Three 3D-conv blocks (spatial pooling after the first), global max pooling, a linear head."""

    def __init__(self, num_classes: int = 3, width: int = 16, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv3d(3, width, 3, padding=1),
            nn.BatchNorm3d(width),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(width, 2 * width, 3, padding=1),
            nn.BatchNorm3d(2 * width),
            nn.ReLU(),
            nn.Conv3d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, pixel_values: Tensor) -> Tensor:  # (B, 3, T, H, W)
        return self.head(self.features(pixel_values).amax((2, 3, 4)))

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["pixel_values"])
        loss = nn.functional.cross_entropy(logits, batch["labels"])
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", (logits.argmax(-1) == batch["labels"]).float().mean(), prog_bar=True)
        return loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def last_folder(log_dir: str, callback: str) -> Path:
    """The last training epoch's artifact folder of one callback."""
    folders = (Path(log_dir) / "xai" / callback).glob("fit-epoch=*")
    return max(folders, key=lambda p: int(p.name.split("epoch=")[1].split("-")[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=768)
    args = parser.parse_args()
    seed_everything(0)

    def clips(n: int, seed: int) -> SyntheticShapesVideo:
        return SyntheticShapesVideo(
            n, num_frames=FRAMES, seed=seed, channels_first_time=True, return_dict=True
        )

    train_set, val_set = clips(args.num_train, 0), clips(96, 1)
    names, stats = val_set.class_names, {"mean": SyntheticShapesVideo.mean, "std": SyntheticShapesVideo.std}
    trainer = Trainer(
        max_epochs=args.epochs,
        logger=TensorBoardLogger(args.logdir, name="video_clips"),
        callbacks=[
            GradCAMCallback(num_samples=3, video_layout="BCTHW", class_names=names, **stats),
            SHAPCallback(num_samples=3, n_background=8, class_names=names, **stats),
            CalibrationCallback(n_bins=10, class_names=names),
        ],
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        log_every_n_steps=8,
    )
    trainer.fit(
        ClipCNN(), DataLoader(train_set, batch_size=32, shuffle=True), DataLoader(val_set, batch_size=48)
    )

    folder = last_folder(trainer.log_dir, "gradcam")
    maps = torch.from_numpy(np.load(folder / "gradcam_gradcam.npy")).clamp_min(0)  # (N, T, H, W)
    indices = json.loads((folder / "summary_gradcam.json").read_text())["dataset_index"]
    masks = torch.stack([val_set[i]["mask"] for i in indices])  # (N, T, H, W)
    inside = (maps * masks).sum((2, 3)) / maps.sum((2, 3)).clamp_min(1e-12)  # (N, T)
    area = masks.mean((2, 3))
    print(
        f"\nval accuracy {float(trainer.callback_metrics['val/acc']):.2f}; Grad-CAM of the last epoch ({folder}):"
    )
    print("frame  Grad-CAM energy in the shape's mask   mask's share of the frame   (means over the probes)")
    for t in range(maps.shape[1]):
        print(f"{t:>5}  {float(inside[:, t].mean()):>34.2f}   {float(area[:, t].mean()):>25.3f}")
    print(f"all    {float(inside.mean()):>34.2f}   {float(area.mean()):>25.3f}")
    print(f"TensorBoard logs in {trainer.log_dir}; PNGs and arrays under {Path(trainer.log_dir) / 'xai'}")
    print(
        f"Look at them:  tensorboard --logdir {args.logdir}   (Images: xai/gradcam/gradcam, xai/shap/pixel_values, "
        "xai/calibration/reliability)"
    )


if __name__ == "__main__":
    main()
