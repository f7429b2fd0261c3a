"""The confidently-wrong gallery: the most confident mistakes of an epoch, with a heatmap when one is available."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_xai.adapters import ModelInputs
from lightning_xai.functional import explanation_mode

__all__ = ["Gallery"]


class Gallery:
    """Keep the ``size`` most confident mistakes seen so far (bounded memory), then render them.

    Example:
        >>> g = Gallery(2)
        >>> g.offer(torch.tensor([[3.0, 0.0], [0.0, 1.0], [5.0, 0.0]]), torch.tensor([1, 1, 1]),
        ...         ModelInputs(args=(torch.zeros(3, 3, 4, 4),)))
        >>> [round(c, 2) for c in g.confidence.tolist()]
        [0.99, 0.95]
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.confidence = torch.empty(0)
        self.labels = torch.empty(0, dtype=torch.long)
        self.preds = torch.empty(0, dtype=torch.long)
        self.images: Tensor | None = None
        self.key: int | str | None = None

    def offer(self, logits: Tensor, labels: Tensor, inputs: ModelInputs) -> None:
        """Consider one batch of multiclass logits; keep the top ``size`` confident mistakes overall."""
        finite = torch.isfinite(logits).all(-1)
        conf, pred = logits.softmax(-1).max(-1)
        wrong = ((pred != labels.reshape(-1)) & finite).nonzero().flatten()
        if self.size == 0 or wrong.numel() == 0:
            return
        self.key = inputs.image_key
        new_images = inputs.get(self.key)[wrong].detach().float().cpu() if self.key is not None else None
        confidence = torch.cat([self.confidence, conf[wrong].float().cpu()])
        order = confidence.argsort(descending=True)[: self.size]
        self.confidence = confidence[order]
        self.labels = torch.cat([self.labels, labels.reshape(-1)[wrong].long().cpu()])[order]
        self.preds = torch.cat([self.preds, pred[wrong].cpu()])[order]
        if new_images is not None:
            images = new_images if self.images is None else torch.cat([self.images, new_images])
            self.images = images[order]

    def render(self, sink: Any, pl_module: pl.LightningModule, trainer: pl.Trainer,
               class_name: Callable[[int], str]) -> None:
        """Send the gallery to ``sink``: images with the heatmap of an attached GradCAMCallback, or text."""
        if self.confidence.numel() == 0:
            return
        titles = [f"true: {class_name(int(t))} | pred: {class_name(int(p))} ({float(c):.2f})"
                  for t, p, c in zip(self.labels, self.preds, self.confidence)]
        ev = sink.event
        suptitle = f"Most confident mistakes · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
        if self.images is None or self.images.dim() != 4:
            rows = "\n".join(f"| {i} | {t} |" for i, t in enumerate(titles))
            sink.text("confidently_wrong", f"{suptitle}\n\n| # | mistake |\n|---|---|\n{rows}")
            return
        from lightning_xai.render import overlay_grid
        from lightning_xai.render.calibration import image_gallery

        maps, method = self._heatmaps(pl_module, trainer)
        if maps is not None:
            fig = overlay_grid(self.images, maps, titles=titles, suptitle=f"{suptitle} · {method} of the predicted class")
        else:
            fig = image_gallery(self.images, titles, suptitle=suptitle)
        sink.figure("confidently_wrong", fig)

    def _heatmaps(self, pl_module: pl.LightningModule, trainer: pl.Trainer) -> tuple[Tensor | None, str]:
        from lightning_xai.callbacks.gradcam import GradCAMCallback

        cam_cb = next((cb for cb in trainer.callbacks if isinstance(cb, GradCAMCallback)), None)  # type: ignore[attr-defined]
        if cam_cb is None or self.images is None or self.key is None:
            return None, ""
        param = next(pl_module.parameters())
        try:
            with explanation_mode(pl_module):
                images = self.images.to(param.device, param.dtype)
                inputs = ModelInputs(args=(images,)) if isinstance(self.key, int) else ModelInputs(
                    kwargs={self.key: images})
                result = cam_cb._explain(pl_module, inputs)
        except Exception as err:  # the gallery is still useful without heatmaps
            warnings.warn(f"lightning_xai: no heatmaps in the confidently-wrong gallery ({err}).", RuntimeWarning,
                          stacklevel=2)
            return None, ""
        method = next(iter(result["maps"]))
        return result["maps"][method], method
