"""Run by tests/system/test_ddp.py in a subprocess: GradCAM, Calibration, SHAP and drift callbacks under
strategy="ddp", 2 CPU ranks."""

from __future__ import annotations

import json
import sys

import torch
from lightning.pytorch import Trainer, seed_everything
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


_IN_GALLERY: list = []  # non-empty while the calibration gallery explains its mistakes


def _count_rows(cls: type, seen: list) -> None:
    """Record how many probe rows each call of ``cls.explain`` gets on this rank (the split's evidence); the
    gallery's calls are recorded as ``gallery/<method>``."""
    explain = cls.explain

    def counted(self, model, inputs, *args, **kwargs):
        seen.append([("gallery/" if _IN_GALLERY else "") + self.name, inputs.batch_size])
        return explain(self, model, inputs, *args, **kwargs)

    cls.explain = counted


def _count_joined(seen: list) -> None:
    """Record how many probe rows each rank holds after the split's gather (rank zero: all; others: their share)."""
    from lightning_xai.callbacks.base import XAICallback

    explain_with = XAICallback._explain_with

    def counted(self, explainer, model, inputs, target=None):
        out = explain_with(self, explainer, model, inputs, target)
        seen.append([explainer.name, int(out.prediction.shape[0])])
        return out

    XAICallback._explain_with = counted


def _count_gallery(log: dict) -> None:
    """Record the rows the gallery's maps were computed for on this rank, and which rank held each kept mistake."""
    import lightning_xai.callbacks._gallery_ranks as ranks
    import lightning_xai.callbacks.calibration as calibration

    part, on_ranks = ranks.explain_part, calibration.explain_on_ranks

    def counted_part(source, batch):
        log["explained"].append(batch.batch_size)
        _IN_GALLERY.append(True)
        try:
            return part(source, batch)
        finally:
            _IN_GALLERY.pop()

    def recorded(gallery, *args, **kwargs):
        log["held_by"] = [m.rank for m in gallery.kept]
        return on_ranks(gallery, *args, **kwargs)

    ranks.explain_part, calibration.explain_on_ranks = counted_part, recorded


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, devices, strategy = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    gallery_log: dict = {"explained": [], "held_by": None}
    _count_gallery(gallery_log)
    joined: list = []
    _count_joined(joined)
    from lightning_xai.explainers import AttributionExplainer, CAMExplainer, ShapExplainer

    rows: list = []
    for explainer_class in (AttributionExplainer, CAMExplainer, ShapExplainer):
        _count_rows(explainer_class, rows)
    seed_everything(3)
    model = ShapesCNN()
    torch.save(model.state_dict(), f"{out}/init_{devices}.pt")
    dm = SyntheticShapesDataModule(batch_size=8, num_train=32, num_val=64, image_size=32)  # 64: no sampler padding
    common = dict(accelerator="cpu", devices=devices, strategy=strategy, enable_progress_bar=False,
                  enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    cbs = [GradCAMCallback(num_samples=4, methods=("gradcam", "scorecam"), on_error="raise"),
           CalibrationCallback(n_bins=10, gallery_size=4, on_error="raise"),
           SHAPCallback(num_samples=2, n_background=4, nsamples=8, max_nsamples=16, on_error="raise"),
           AttributionDriftCallback(num_samples=4, store=f"{out}/store.sqlite", run="validate", on_error="raise"),
           AttributionCallback(num_samples=4, methods=("saliency", "occlusion", "smoothgrad", "lime", "deeplift"),
                               method_kwargs={"smoothgrad": {"nt_samples": 4}, "lime": {"n_samples": 64}},
                               on_error="raise")]
    # validate first: the same weights on 1 and 2 processes must give the same maps and calibration
    trainer = Trainer(logger=TensorBoardLogger(out, name="validate"), callbacks=cbs, **common)
    trainer.validate(model, dm)
    with open(f"{out}/callback_metrics_rank{trainer.global_rank}.json", "w") as fh:  # every rank holds the xai scalars
        json.dump({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/")}, fh)
    with open(f"{out}/rows_rank{trainer.global_rank}.json", "w") as fh:
        json.dump(rows, fh)
    with open(f"{out}/gallery_rank{trainer.global_rank}.json", "w") as fh:
        json.dump(gallery_log, fh)
    with open(f"{out}/joined_rank{trainer.global_rank}.json", "w") as fh:
        json.dump(joined, fh)
    fit_cb = GradCAMCallback(num_samples=4, on_error="raise")
    drift_cb = AttributionDriftCallback(num_samples=4, store=f"{out}/store.sqlite", run="fit", on_error="raise")
    Trainer(logger=TensorBoardLogger(out, name="fit"), callbacks=[fit_cb, drift_cb], max_epochs=2, limit_train_batches=2,
            limit_val_batches=1, **common).fit(model, dm)
