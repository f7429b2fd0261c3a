"""Audio: explain a spectrogram classifier while it trains, and check that it listens to the right band.

    python examples/audio_spectrogram.py
    tensorboard --logdir logs

The data (``SyntheticToneSpectrograms``) are log-magnitude spectrograms (64 frequency bins x 64 frames) of white
noise with one tone burst whose frequency band is the class (low, mid, high), plus a distractor that never decides
it: a broadband click or a tone in a band above every class band. Each item carries the deciding burst's
time-frequency box. A small CNN that keeps the frequency axis (it pools over time only) learns the bands in a few
CPU epochs. SHAPCallback draws the SHAP values on the spectrograms with their time and frequency marginals
(``xai/shap/spectrogram``), GradCAMCallback overlays Grad-CAM (``xai/gradcam/gradcam``, with
``xai/gradcam/gradcam/energy_in_mask`` against the boxes), CalibrationCallback draws the reliability diagram. At
the end the example prints, per probe, the share of the positive SHAP values that falls inside the deciding burst's
box, next to the box's share of the spectrogram's area: a model that listens to the right band puts far more
than the area share there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_xai import CalibrationCallback, GradCAMCallback, SHAPCallback, load_shap_values
from lightning_xai.datasets import SyntheticToneSpectrograms


class ToneCNN(LightningModule):
    """Three conv blocks, max over time (the frequency axis is kept: the band is the class), a linear head."""

    def __init__(self, n_freq: int = 64, num_classes: int = 3, width: int = 16, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width * (n_freq // 2), num_classes)

    def forward(self, spectrogram: Tensor) -> Tensor:  # (B, 1, F, T): the input's name tells SHAP it is audio
        return self.head(self.features(spectrogram).amax(-1).flatten(1))

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        logits = self(batch["spectrogram"])
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
    parser.add_argument("--num-train", type=int, default=1024)
    args = parser.parse_args()
    seed_everything(0)
    train_set, val_set = (
        SyntheticToneSpectrograms(args.num_train, seed=0),
        SyntheticToneSpectrograms(192, seed=1),
    )
    names = [
        f"{n} {lo / 1000:.1f}-{hi / 1000:.1f} kHz"
        for n, (lo, hi) in zip(val_set.class_names, val_set.band_hz)
    ]
    trainer = Trainer(
        max_epochs=args.epochs,
        logger=TensorBoardLogger(args.logdir, name="audio_spectrogram"),
        callbacks=[
            SHAPCallback(num_samples=4, n_background=16, class_names=names),
            GradCAMCallback(num_samples=4, class_names=names, mean=(0.0,), std=(1.0,)),  # already in [0, 1]
            CalibrationCallback(n_bins=10, class_names=names),
        ],
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        log_every_n_steps=8,
    )
    trainer.fit(
        ToneCNN(), DataLoader(train_set, batch_size=32, shuffle=True), DataLoader(val_set, batch_size=64)
    )

    folder = last_folder(trainer.log_dir, "shap")
    values = torch.from_numpy(load_shap_values(folder)["spectrogram"]).squeeze(1).clamp_min(0)  # (N, F, T)
    samples = json.loads((folder / "summary.json").read_text())["samples"]
    print(
        f"\nval accuracy {float(trainer.callback_metrics['val/acc']):.2f}; SHAP of the last epoch ({folder}):"
    )
    print("probe  class                   positive SHAP in the burst's box   box's share of the area")
    shares, areas = [], []
    for v, sample in zip(values, samples):
        item = val_set[sample["dataset_index"]]
        mask = item["mask"]
        shares.append(float((v * mask).sum() / v.sum().clamp_min(1e-12)))
        areas.append(float(mask.mean()))
        print(
            f"{sample['dataset_index']:>5}  {names[int(item['labels'])]:<22}  {shares[-1]:>31.2f}   {areas[-1]:>23.3f}"
        )
    print(f"mean   {'':<22}  {sum(shares) / len(shares):>31.2f}   {sum(areas) / len(areas):>23.3f}")
    energy = json.loads((last_folder(trainer.log_dir, "gradcam") / "summary_gradcam.json").read_text())
    print(
        f"Grad-CAM energy in the box (mean over probes): {sum(energy['energy_in_mask']) / len(samples):.2f}   "
        f"(box's area share {sum(areas) / len(areas):.3f})"
    )
    print(f"TensorBoard logs in {trainer.log_dir}; PNGs and arrays under {Path(trainer.log_dir) / 'xai'}")
    print(
        f"Look at them:  tensorboard --logdir {args.logdir}   (Images: xai/shap/spectrogram, xai/gradcam/gradcam, "
        "xai/calibration/reliability)"
    )


if __name__ == "__main__":
    main()
