"""The confidently-wrong gallery: an epoch's most confident mistakes, with an explanation when one is available.

The gallery keeps the ``size`` most confident mistakes seen so far, each with every tensor input of its sample
(copied to the CPU, so memory is ``size`` samples whatever the epoch). At epoch end it renders them:

* image inputs: thumbnails with the Grad-CAM of the predicted class when a :class:`GradCAMCallback` is on the
  Trainer, else with the signed SHAP values of the predicted class when a :class:`SHAPCallback` is;
* token ids: the SHAP token plot of the predicted class when a :class:`SHAPCallback` is on the Trainer; without
  it (or if it fails), a table of the decoded text when that callback knows a tokenizer, else of the mistakes.

The explanations are the other callback's own ``_explain`` on the kept inputs, inside ``explanation_mode``
(nothing is copied from their engines); if one fails, a warning says why and the gallery renders without it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_xai.adapters import ModelInputs
from lightning_xai.functional import explanation_mode

__all__ = ["Gallery"]

_ROW_SUM_TOL = 1e-3
_SIGNED = "SHAP value: red toward the predicted class, blue away from it"
_SIGNED_SHORT = "SHAP (red: for pred, blue: against)"  # fits a vertical colour bar


@dataclass
class _Mistake:
    confidence: float
    label: int
    pred: int
    inputs: ModelInputs  # this sample alone (batch of one), on the CPU


def _row(inputs: ModelInputs, i: int, size: int) -> ModelInputs:
    """Sample ``i`` of every batch-shaped tensor input, copied (no view keeps the batch alive)."""

    def take(t: Any) -> Any:
        is_row = isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == size
        return t[i:i + 1].detach().to("cpu", copy=True) if is_row else t

    return ModelInputs(tuple(take(a) for a in inputs.args), {k: take(v) for k, v in inputs.kwargs.items()})


def _stack(kept: list[_Mistake]) -> ModelInputs | None:
    """The kept samples as one batch, or None when their shapes differ (e.g. texts of unequal length)."""
    first = kept[0].inputs
    try:
        args = tuple(torch.cat([m.inputs.args[j] for m in kept]) for j in range(len(first.args)))
        kwargs = {k: torch.cat([m.inputs.kwargs[k] for m in kept]) for k in first.kwargs}
    except (RuntimeError, TypeError, KeyError, IndexError):
        return None
    return ModelInputs(args, kwargs)


def _token_key(inputs: ModelInputs) -> int | str | None:
    """Position or key of the token ids: ``input_ids``, else the first 2-D integer input that is no mask."""
    ints = {k: v for k, v in (*enumerate(inputs.args), *inputs.kwargs.items())
            if isinstance(v, Tensor) and v.dim() == 2 and not v.is_floating_point() and v.dtype != torch.bool}
    if "input_ids" in ints:
        return "input_ids"
    return next((k for k in ints if not (isinstance(k, str) and ("mask" in k or "type" in k))), None)


def _flat_position(inputs: ModelInputs, key: int | str) -> int:
    return key if isinstance(key, int) else len(inputs.args) + list(inputs.kwargs).index(key)


def _on_model(inputs: ModelInputs, model: nn.Module) -> ModelInputs:
    """Fresh copies on the model's device, floats in its dtype (call inside ``explanation_mode``)."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)

    def fresh(t: Any) -> Any:
        if not isinstance(t, Tensor):
            return t
        t = t.detach().to(device).clone()
        return t.to(dtype) if t.is_floating_point() else t

    return ModelInputs(tuple(fresh(a) for a in inputs.args), {k: fresh(v) for k, v in inputs.kwargs.items()})


def _attached(trainer: pl.Trainer, name: str) -> Any:
    from lightning_xai.callbacks.gradcam import GradCAMCallback
    from lightning_xai.callbacks.shap import SHAPCallback

    kind = {"gradcam": GradCAMCallback, "shap": SHAPCallback}[name]
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)  # type: ignore[attr-defined]


def _warn(what: str, err: Exception) -> None:
    warnings.warn(f"lightning_xai: no {what} in the confidently-wrong gallery ({type(err).__name__}: {err}).",
                  RuntimeWarning, stacklevel=3)


class Gallery:
    """Keep the ``size`` most confident mistakes seen so far (bounded memory), then render them.

    Example:
        >>> g = Gallery(2)
        >>> g.offer(torch.tensor([[3.0, 0.0], [0.0, 1.0], [5.0, 0.0]]), torch.tensor([1, 1, 1]),
        ...         ModelInputs(args=(torch.zeros(3, 3, 4, 4),)))
        >>> [round(c, 2) for c in g.confidence.tolist()], tuple(g.kept[0].inputs.args[0].shape)
        ([0.99, 0.95], (1, 3, 4, 4))
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.kept: list[_Mistake] = []

    @property
    def confidence(self) -> Tensor:
        """Confidences of the kept mistakes, largest first."""
        return torch.tensor([m.confidence for m in self.kept])

    def offer(self, preds: Tensor, labels: Tensor, inputs: ModelInputs, input: str = "auto") -> None:
        """Consider one batch of multiclass predictions; keep the top ``size`` confident mistakes overall.

        ``preds`` are logits or, with ``input="probs"`` (or ``"auto"`` and rows that are distributions),
        probabilities.
        """
        if self.size == 0 or preds.numel() == 0:
            return
        preds = preds.detach().float()
        finite = torch.isfinite(preds).all(-1)
        is_probs = input == "probs"
        if input == "auto":  # the functional rule: values in [0, 1] and rows summing to one
            low, high = (float(v) for v in torch.aminmax(preds))
            is_probs = low >= 0 and high <= 1 and bool(((preds.sum(-1) - 1).abs() <= _ROW_SUM_TOL).all())
        conf, pred = (preds if is_probs else preds.softmax(-1)).max(-1)
        wrong = (pred != labels.reshape(-1).to(pred.device)) & finite
        floor = self.kept[-1].confidence if len(self.kept) >= self.size else -1.0
        candidates = torch.where(wrong & (conf > floor), conf, -1.0)
        top = candidates.topk(min(self.size, candidates.numel())).indices.tolist()
        size = inputs.batch_size
        for i in top:
            if float(candidates[i]) < 0:
                break
            label = int(labels.reshape(-1)[i])
            self.kept.append(_Mistake(float(conf[i]), label, int(pred[i]), _row(inputs, i, size)))
        self.kept.sort(key=lambda m: -m.confidence)
        del self.kept[self.size:]

    # ------------------------------------------------------------------ rendering
    def render(self, sink: Any, pl_module: pl.LightningModule, trainer: pl.Trainer,
               class_name: Callable[[int], str]) -> None:
        """Send the gallery to ``sink``: a figure for images and token ids, else a text table."""
        if not self.kept:
            return
        titles = [f"true: {class_name(m.label)} | pred: {class_name(m.pred)} ({m.confidence:.2f})"
                  for m in self.kept]
        ev = sink.event
        suptitle = f"Most confident mistakes · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
        batch = _stack(self.kept)
        image_key = None if batch is None else batch.image_key
        if batch is not None and image_key is not None and batch.get(image_key).dim() == 4:
            sink.figure("confidently_wrong", self._image_figure(batch, image_key, titles, suptitle, pl_module,
                                                                trainer, ev.stage))
            return
        token_key = _token_key(self.kept[0].inputs)
        shap_cb = _attached(trainer, "shap")
        if token_key is not None and shap_cb is not None:
            fig = self._token_figure(shap_cb, token_key, titles, suptitle, pl_module, trainer, ev.stage)
            if fig is not None:
                sink.figure("confidently_wrong", fig)
                return
        sink.text("confidently_wrong", self._table(titles, suptitle, token_key, shap_cb))

    def _image_figure(self, batch: ModelInputs, key: int | str, titles: list[str], suptitle: str,
                      pl_module: pl.LightningModule, trainer: pl.Trainer, stage: str) -> Any:
        from lightning_xai.render import overlay_grid, signed_heatmap_grid
        from lightning_xai.render.calibration import image_gallery

        images = batch.get(key).float()
        cam_cb, shap_cb = _attached(trainer, "gradcam"), _attached(trainer, "shap")
        if cam_cb is not None:
            try:
                with explanation_mode(pl_module):
                    maps = cam_cb._explain(pl_module, _on_model(batch, pl_module))["maps"]
                method = next(iter(maps))
                return overlay_grid(images, maps[method], titles=titles,
                                    suptitle=f"{suptitle} · {method} of the predicted class")
            except Exception as err:  # the gallery is still useful without heatmaps
                _warn("Grad-CAM heatmaps", err)
        elif shap_cb is not None:
            values = self._shap(shap_cb, batch, key, pl_module, trainer, stage)
            if values is not None:
                return signed_heatmap_grid(batch.get(key), values.sum(1), titles=titles, mean=shap_cb.mean,
                                           std=shap_cb.std, suptitle=f"{suptitle} · SHAP of the predicted class",
                                           colorbar_label=_SIGNED_SHORT)
        return image_gallery(images, titles, suptitle=suptitle)

    def _token_figure(self, shap_cb: Any, key: int | str, titles: list[str], suptitle: str,
                      pl_module: pl.LightningModule, trainer: pl.Trainer, stage: str) -> Any:
        """SHAP token plot of the predicted class; texts of unequal length are explained in groups."""
        from lightning_xai.render import token_grid

        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(self.kept):
            groups.setdefault(tuple(m.inputs.get(key).shape), []).append(i)
        rows: list[Any] = [None] * len(self.kept)
        for members in groups.values():
            batch = _stack([self.kept[i] for i in members])
            values = None if batch is None else self._shap(shap_cb, batch, key, pl_module, trainer, stage)
            if values is None:
                return None
            ids = batch.get(key)  # type: ignore[union-attr]
            attention = batch.kwargs.get("attention_mask")  # type: ignore[union-attr]
            tokens, keep = shap_cb._token_strings(ids), shap_cb._special_mask(ids, attention)
            for row, i in enumerate(members):
                rows[i] = (tokens[row], values[row], keep[row], titles[i])
        return token_grid(rows, suptitle=f"{suptitle} · SHAP of the predicted class ({shap_cb.engine})",
                          colorbar_label=_SIGNED)

    def _shap(self, shap_cb: Any, batch: ModelInputs, key: int | str, pl_module: pl.LightningModule,
              trainer: pl.Trainer, stage: str) -> Tensor | None:
        """SHAP values of input ``key`` for the predicted class, from the SHAPCallback's own ``_explain``."""
        if callable(shap_cb.target):  # it explains a score, not a class
            return None
        target = shap_cb.target
        try:
            with explanation_mode(pl_module):
                if shap_cb._background is None:  # it draws its background at its own epoch end: maybe later
                    shap_cb._background = shap_cb._draw_background(trainer, stage)
                shap_cb.target = "pred"  # the gallery explains the predicted class, whatever the callback shows
                result = shap_cb._explain(pl_module, _on_model(batch, pl_module))
        except Exception as err:  # the gallery is still useful without SHAP values
            _warn("SHAP values", err)
            return None
        finally:
            shap_cb.target = target
        return result["result"].values[_flat_position(batch, key)].detach().float().cpu()

    def _table(self, titles: list[str], suptitle: str, key: int | str | None, shap_cb: Any) -> str:
        """Markdown table of the mistakes, with their decoded text when a tokenizer is known."""
        tokenizer = None if shap_cb is None else shap_cb.tokenizer
        if key is None or tokenizer is None:
            rows = "\n".join(f"| {i} | {t} |" for i, t in enumerate(titles))
            return f"{suptitle}\n\n| # | mistake |\n|---|---|\n{rows}"
        lines = []
        for i, (m, title) in enumerate(zip(self.kept, titles)):
            ids = m.inputs.get(key)
            tokens = shap_cb._token_strings(ids)[0]
            keep = shap_cb._special_mask(ids, m.inputs.kwargs.get("attention_mask"))[0].tolist()
            shown = [t for t, k in zip(tokens, keep) if k]
            joined = getattr(tokenizer, "convert_tokens_to_string", " ".join)(shown)
            cell = str(joined).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {i} | {title} | {cell} |")
        return f"{suptitle}\n\n| # | mistake | text |\n|---|---|---|\n" + "\n".join(lines)
