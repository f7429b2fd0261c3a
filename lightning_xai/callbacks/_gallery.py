"""The confidently-wrong gallery: an epoch's most confident mistakes, with an explanation when one is available.

The gallery keeps the ``size`` most confident mistakes seen so far, each with every tensor input of its sample
(copied to the CPU, so memory is ``size`` samples whatever the epoch). At epoch end it renders them:

* image inputs: thumbnails with the explanation of the predicted class by an attribution callback on the Trainer
  (one whose explainer is made for images, e.g. :class:`GradCAMCallback`, before a general one such as
  :class:`SHAPCallback`): a heatmap overlay, or a signed map for signed methods;
* token ids: the token plot of the predicted class by a callback whose explainer explains tokens (SHAP); without
  one (or if it fails), a table of the decoded text when that explainer knows a tokenizer, else of the mistakes.

The explanations come from the other callback's public :meth:`~lightning_xai.callbacks.base.XAICallback.explain`
(its explainer, ``forward_fn``, ``output`` and background) on the kept inputs, so any registered explainer works
here; if one fails, a warning says why and the gallery renders without it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai._inputs import Scorer, input_names, on_model, token_key
from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.explainers import Explainer, Explanation, get_explainer, list_explainers
from lightning_xai.functional import explanation_mode
from lightning_xai.explainers._tokens import load_tokenizer, shown_tokens, token_strings

__all__ = ["Gallery", "gallery_explainer"]

_ROW_SUM_TOL = 1e-3
_SIGNED = "SHAP value: red toward the predicted class, blue away from it"
_SIGNED_SHORT = "SHAP (red: for pred, blue: against)"  # fits a vertical colour bar


@dataclass
class _Mistake:
    confidence: float
    label: int
    pred: int
    inputs: ModelInputs  # this sample alone (batch of one), on the CPU
    rank: int = 0  # the DDP rank that saw it (its map is computed there: _gallery_ranks.py)


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


def _flat_name(inputs: ModelInputs, key: int | str) -> str:
    """The display name of input ``key`` (as explanations name it)."""
    names = input_names(inputs)
    return names[key] if isinstance(key, int) else names[len(inputs.args) + list(inputs.kwargs).index(key)]


@dataclass(frozen=True)
class _Source:
    """Where the gallery's explanation of the predicted class comes from: a sibling callback or its own explainer."""

    explainer: Explainer
    explain: Callable[[ModelInputs], Explanation]
    mean: Any = None
    std: Any = None


def _sources(trainer: pl.Trainer, pl_module: pl.LightningModule, kind: str, own: Explainer | None,
             scorer: Scorer | None) -> list[_Source]:
    """Explainers of ``kind`` inputs: the gallery's own (``gallery_method=``) first, then the attribution callbacks
    on the Trainer, specialists first (an explainer made for fewer kinds of input, e.g. Grad-CAM for images, before
    a general one such as SHAP). Callbacks that explain a score rather than a class are left out."""
    found: list[_Source] = []
    if own is not None and kind in own.kinds:
        def run(batch: ModelInputs) -> Explanation:
            with explanation_mode(pl_module):
                return own.explain(pl_module, on_model(batch, pl_module), "pred", scorer)

        found.append(_Source(own, run))
    callbacks = sorted((cb for cb in trainer.callbacks  # type: ignore[attr-defined]
                        if isinstance(cb, XAICallback) and cb.explainer is not None and kind in cb.explainer.kinds
                        and not callable(cb.target)), key=lambda cb: len(cb.explainer.kinds))
    for cb in callbacks:
        found.append(_Source(cb.explainer, lambda batch, cb=cb: cb.explain(trainer, pl_module, batch, target="pred"),
                             getattr(cb, "mean", None), getattr(cb, "std", None)))
    return found


def warn_no_maps(name: str, err: Exception) -> None:
    """Say that the gallery is drawn without the maps of explainer ``name``, and why."""
    what = "SHAP values" if name == "shap" else f"{name} heatmaps"
    warnings.warn(f"lightning_xai: no {what} in the confidently-wrong gallery ({type(err).__name__}: {err}).",
                  RuntimeWarning, stacklevel=3)


def image_batch(kept: list[_Mistake]) -> ModelInputs | None:
    """The kept mistakes as one batch when they stack and hold a 4-D image input, else ``None``."""
    batch = _stack(kept) if kept else None
    key = None if batch is None else batch.image_key
    return batch if batch is not None and key is not None and batch.get(key).dim() == 4 else None


def image_sources(gallery: Gallery, trainer: pl.Trainer, pl_module: pl.LightningModule,
                  scorer: Scorer | None) -> list[_Source]:
    """Where the gallery's image maps come from, first choice first (see ``_sources``)."""
    return _sources(trainer, pl_module, "image", gallery.explainer, scorer)


class Gallery:
    """Keep the ``size`` most confident mistakes seen so far (bounded memory), then render them.

    Example:
        >>> g = Gallery(2)
        >>> g.offer(torch.tensor([[3.0, 0.0], [0.0, 1.0], [5.0, 0.0]]), torch.tensor([1, 1, 1]),
        ...         ModelInputs(args=(torch.zeros(3, 3, 4, 4),)))
        >>> [round(c, 2) for c in g.confidence.tolist()], tuple(g.kept[0].inputs.args[0].shape)
        ([0.99, 0.95], (1, 3, 4, 4))
    """

    def __init__(self, size: int, explainer: Explainer | None = None) -> None:
        self.size = size
        self.explainer = explainer  # the gallery's own (by name), else a sibling callback's
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

    def merge(self, mistakes: list[_Mistake]) -> None:
        """Keep the ``size`` most confident of ``mistakes`` (e.g. every DDP rank's kept ones, gathered)."""
        self.kept = sorted(mistakes, key=lambda m: -m.confidence)[:self.size]

    # ------------------------------------------------------------------ rendering
    def render(self, sink: Any, pl_module: pl.LightningModule, trainer: pl.Trainer,
               class_name: Callable[[int], str], scorer: Scorer | None = None, maps: Any = None) -> None:
        """Send the gallery to ``sink``: a figure for images and token ids, else a text table. ``scorer`` runs the
        model for the gallery's own explainer; ``maps`` (a ``GalleryMaps``, from the ranks that held the mistakes)
        replaces the image explanation computed here."""
        if not self.kept:
            return
        titles = [f"true: {class_name(m.label)} | pred: {class_name(m.pred)} ({m.confidence:.2f})"
                  for m in self.kept]
        ev = sink.event
        suptitle = f"Most confident mistakes · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
        batch = image_batch(self.kept)
        if batch is not None:
            sources = image_sources(self, trainer, pl_module, scorer)[:1]
            if maps is not None:  # explained on the ranks that held the mistakes (None there: a rank failed)
                sources = [] if maps.explanation is None else [
                    _Source(s.explainer, lambda _, e=maps.explanation: e, s.mean, s.std) for s in sources]
            sink.figure("confidently_wrong", self._image_figure(batch, batch.image_key, titles, suptitle, sources))
            return
        key = token_key(self.kept[0].inputs)
        sources = _sources(trainer, pl_module, "tokens", self.explainer, scorer) if key is not None else []
        for source in sources[:1]:
            fig = self._token_figure(source, key, titles, suptitle)  # type: ignore[arg-type]
            if fig is not None:
                sink.figure("confidently_wrong", fig)
                return
        sink.text("confidently_wrong", self._table(titles, suptitle, key, sources[0] if sources else None))

    def _image_figure(self, batch: ModelInputs, key: int | str, titles: list[str], suptitle: str,
                      sources: list[_Source]) -> Any:
        from lightning_xai.render import overlay_grid, signed_heatmap_grid
        from lightning_xai.render.calibration import image_gallery

        images = batch.get(key).float()
        for source in sources:
            expl = _explained(source, batch)
            maps = None if expl is None else expl.maps().get(_flat_name(batch, key))
            if expl is None or maps is None:
                break
            if expl.signed:
                what = "SHAP" if expl.method == "shap" else expl.method
                return partial(signed_heatmap_grid, batch.get(key), maps, titles=titles, mean=source.mean,
                               std=source.std, colorbar_label=_SIGNED_SHORT if expl.method == "shap" else
                               f"{what} (red: for pred)", suptitle=f"{suptitle} · {what} of the predicted class")
            return partial(overlay_grid, images, maps, titles=titles,
                           suptitle=f"{suptitle} · {expl.method} of the predicted class")
        return partial(image_gallery, images, titles, suptitle=suptitle)

    def _token_figure(self, source: _Source, key: int | str, titles: list[str], suptitle: str) -> Any:
        """Token plot of the predicted class; texts of unequal length are explained in groups."""
        from lightning_xai.render import token_grid

        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(self.kept):
            groups.setdefault(tuple(m.inputs.get(key).shape), []).append(i)
        rows: list[Any] = [None] * len(self.kept)
        what = ""
        for members in groups.values():
            batch = _stack([self.kept[i] for i in members])
            expl = None if batch is None else _explained(source, batch)
            name = None if batch is None else _flat_name(batch, key)
            if expl is None or name not in expl.values:
                return None
            what = f"SHAP of the predicted class ({expl.settings['engine']})" if expl.method == "shap" else (
                f"{expl.method} of the predicted class")
            for row, i in enumerate(members):
                rows[i] = (expl.tokens[name][row], expl.values[name][row], expl.keep[name][row], titles[i])
        return partial(token_grid, rows, suptitle=f"{suptitle} · {what}", colorbar_label=_SIGNED)

    def _table(self, titles: list[str], suptitle: str, key: int | str | None, source: _Source | None) -> str:
        """Markdown table of the mistakes, with their decoded text when a tokenizer is known."""
        tokenizer = load_tokenizer(getattr(source.explainer, "tokenizer", None)) if source is not None else None
        if key is None or tokenizer is None:
            rows = "\n".join(f"| {i} | {t} |" for i, t in enumerate(titles))
            return f"{suptitle}\n\n| # | mistake |\n|---|---|\n{rows}"
        lines = []
        for i, (m, title) in enumerate(zip(self.kept, titles)):
            ids = m.inputs.get(key)
            tokens = token_strings(tokenizer, ids)[0]
            keep = shown_tokens(tokenizer, ids, m.inputs.kwargs.get("attention_mask"))[0].tolist()
            shown = [t for t, k in zip(tokens, keep) if k]
            joined = getattr(tokenizer, "convert_tokens_to_string", " ".join)(shown)
            cell = str(joined).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {i} | {title} | {cell} |")
        return f"{suptitle}\n\n| # | mistake | text |\n|---|---|---|\n" + "\n".join(lines)


def _explained(source: _Source, batch: ModelInputs) -> Explanation | None:
    """The source's explanation of the predicted class, or ``None`` with a warning when it fails."""
    try:
        return source.explain(batch)
    except Exception as err:  # the gallery is still useful without the explanation
        warn_no_maps(source.explainer.name, err)
        return None


def gallery_explainer(method: str | None, kwargs: dict[str, Any] | None) -> Explainer | None:
    """The gallery's own explainer, by registered name; one that wants a background from the data is refused."""
    if method is None:
        if kwargs:
            raise ValueError(expected("gallery_method_kwargs", "None without `gallery_method=`", kwargs))
        return None
    if method not in list_explainers():
        raise ValueError(expected("gallery_method", f"None or a registered explainer, one of {list_explainers()}",
                                  method))
    try:
        explainer = get_explainer(method, **(kwargs or {}))
    except TypeError as err:
        raise ValueError(expected("gallery_method_kwargs", f"arguments of the {method!r} explainer", kwargs)
                         + f" ({err})") from err
    if explainer.n_background > 0:
        raise ValueError(expected("gallery_method", "an explainer that needs no background from the data (put a "
                                  "callback of it, e.g. SHAPCallback, on the Trainer instead: the gallery uses it)",
                                  method))
    return explainer
