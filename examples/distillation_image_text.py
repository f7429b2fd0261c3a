"""Teacher/Student distillation on an image+text task: explain both heads every epoch and watch the Student's
explanations converge to the Teacher's.

    python examples/distillation_image_text.py
    tensorboard --logdir logs
    lightning-xai drift --store logs/xai_store.sqlite --reference teacher

The data (``PatchKeywordPairs``) pairs a noise image holding a red or green patch with a sentence holding keyword
7 or 8; the class needs both. One LightningModule holds a wide Teacher and a narrow Student that learns from the
Teacher's softened outputs (Hinton et al.'s distillation loss) and returns ``{"teacher": ..., "student": ...}``.
Each head gets its own callbacks through ``output=`` and ``name=``: SHAP values with the per-modality shares
(``xai/shap_teacher/share/pixel_values`` vs ``xai/shap_student/share/...``), calibration of each head, and an
AttributionDriftCallback per head writing the runs ``teacher`` and ``student`` into one store, the Student's
compared with the Teacher's at the same epoch (``xai/drift_student/pixel_values/spearman/reference``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_xai import AttributionDriftCallback, CalibrationCallback, SHAPCallback, load_shap_values
from lightning_xai.datasets import PatchKeywordPairs
from lightning_xai.functional import modality_shares


class Tower(nn.Module):
    """An image branch (two convs, global max pool) and a text branch (embedding, conv, max pool), fused."""

    def __init__(self, width: int, num_classes: int = 4) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                                   nn.Flatten())
        self.embedding = nn.Embedding(60, width)
        self.text = nn.Conv1d(width, width, 3, padding=1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, pixel_values: Tensor, input_ids: Tensor) -> Tensor:
        text = torch.relu(self.text(self.embedding(input_ids).transpose(1, 2))).amax(-1)
        return self.head(torch.cat([self.image(pixel_values), text], dim=1))


class Distillation(LightningModule):
    """A Teacher (width 32) trained on the labels; a Student (width 8) trained on labels and the Teacher's
    softened outputs (temperature ``T``)."""

    def __init__(self, temperature: float = 2.0, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.teacher, self.student = Tower(32), Tower(8)

    def forward(self, pixel_values: Tensor, input_ids: Tensor) -> dict[str, Tensor]:
        return {"teacher": self.teacher(pixel_values, input_ids), "student": self.student(pixel_values, input_ids)}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out, t = self(batch["pixel_values"], batch["input_ids"]), self.hparams.temperature
        teacher_loss = nn.functional.cross_entropy(out["teacher"], batch["labels"])
        soft = nn.functional.kl_div(nn.functional.log_softmax(out["student"] / t, -1),
                                    nn.functional.softmax(out["teacher"].detach() / t, -1), reduction="batchmean")
        student_loss = 0.5 * nn.functional.cross_entropy(out["student"], batch["labels"]) + 0.5 * t * t * soft
        self.log_dict({"train/teacher_loss": teacher_loss, "train/student_loss": student_loss})
        return teacher_loss + student_loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self(batch["pixel_values"], batch["input_ids"])
        for head, logits in out.items():
            self.log(f"val/{head}_acc", (logits.argmax(-1) == batch["labels"]).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def head_callbacks(head: str, store: str, class_names: list[str], tag: str = "") -> list[Any]:
    """SHAP, calibration and drift for one head, in their own namespaces; drift runs ``<head><tag>``."""
    return [
        SHAPCallback(num_samples=4, n_background=16, output=head, name=f"shap_{head}", class_names=class_names,
                     embedding_layer=f"{head}.embedding"),  # two token embeddings: name the head's own
        CalibrationCallback(n_bins=10, output=head, name=f"calibration_{head}", class_names=class_names),
        AttributionDriftCallback(method="shap", num_samples=8, store=store, run=f"{head}{tag}", output=head,
                                 target="label", name=f"drift_{head}",
                                 reference_run=None if head == "teacher" else f"teacher{tag}",
                                 method_kwargs={"n_background": 16, "embedding_layer": f"{head}.embedding"},
                                 class_names=class_names),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=2048)
    args = parser.parse_args()
    seed_everything(0)
    names = list(PatchKeywordPairs.class_names)
    store = str(Path(args.logdir) / "xai_store.sqlite")
    train = DataLoader(PatchKeywordPairs(args.num_train, seed=0), batch_size=64, shuffle=True)
    val = DataLoader(PatchKeywordPairs(256, seed=1), batch_size=128)
    logger = TensorBoardLogger(args.logdir, name="distillation")
    # one pair of run names per invocation: a rerun's Student is compared with its own Teacher, never an older one
    tag = f"/version_{logger.version}"
    trainer = Trainer(max_epochs=args.epochs, logger=logger,
                      callbacks=head_callbacks("teacher", store, names, tag) + head_callbacks("student", store, names,
                                                                                             tag),
                      accelerator="cpu", devices=1, enable_checkpointing=False, log_every_n_steps=8)
    trainer.fit(Distillation(), train, val)
    metrics = trainer.callback_metrics
    print(f"\nval accuracy: teacher {float(metrics['val/teacher_acc']):.2f}, "
          f"student {float(metrics['val/student_acc']):.2f}")
    for head in ("teacher", "student"):  # the last epoch's SHAP artifacts of each head
        folder = sorted((Path(trainer.log_dir) / "xai" / f"shap_{head}").glob("fit-epoch=*"),
                        key=lambda p: p.stat().st_mtime)[-1]
        values = load_shap_values(folder)
        shares = modality_shares((torch.from_numpy(values["pixel_values"]), torch.from_numpy(values["input_ids"])))
        image, text = shares.mean(0).tolist()
        print(f"{head}: share of |SHAP| image {image:.2f}, text {text:.2f}   ({folder})")
    print(f"TensorBoard: tensorboard --logdir {args.logdir}   (xai/shap_teacher/*, xai/shap_student/*, "
          "xai/drift_student/*/reference)")
    print(f"Student vs Teacher explanations: lightning-xai drift --store {store} --reference teacher{tag}")


if __name__ == "__main__":
    main()
