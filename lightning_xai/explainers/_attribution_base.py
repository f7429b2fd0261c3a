"""The base of the attribution explainers: the typed result and the one ``explain`` every method shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, expected
from lightning_xai._inputs import Scorer, clip_layout, input_kind, input_names, spectrogram_time_first
from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers._base import Explainer, Explanation, Target, targets_of
from lightning_xai.explainers._tokens import load_tokenizer, shown_tokens, token_strings
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional.attribution import AttributionResult, attribute
from lightning_xai.functional.attribution._feature_mask import check_feature_mask

__all__ = ["AttributionExplainer", "AttributionExplanation", "Baseline", "Baselined", "check_baseline",
           "check_feature_masks"]


@dataclass(frozen=True, kw_only=True)
class AttributionExplanation(Explanation):
    """An attribution explanation: ``values`` of the input's shape per explained input (token ids: one value per
    token, the embedding attribution summed over the embedding dim).

    Attributes:
        outputs: the explained score ``f(x)`` per probe.
        completeness_error: ``|sum(attr) - (f(x) - f(baseline))|`` per probe, for the methods that promise
            completeness (``integrated_gradients``, ``deeplift``), else ``None``.
        relative_error: ``completeness_error / |f(x) - f(baseline)|``.
        converged: integrated gradients to a ``completeness_tol``: per probe, ``relative_error <=
            completeness_tol`` (``False``: stopped at ``max_steps`` without reaching it); else ``None``.
        n_steps_used: integrated gradients to a ``completeness_tol``: gradient rows spent per probe; else ``None``.
    """

    outputs: Tensor | None = None
    completeness_error: Tensor | None = None
    relative_error: Tensor | None = None
    converged: Tensor | None = None
    n_steps_used: Tensor | None = None

    row_fields: ClassVar[tuple[str, ...]] = (*Explanation.row_fields, "outputs", "completeness_error",
                                             "relative_error", "converged", "n_steps_used")


class AttributionExplainer(Explainer):
    """Base of the attribution explainers: explains every floating input jointly, token ids at the output of their
    embedding layer (other integer inputs, such as attention masks, pass through). A subclass sets ``name`` and
    returns its method's arguments from :meth:`options`.

    Args:
        embedding_layer: dotted name of the token embedding layer (default: found automatically).
        tokenizer: a Hugging Face tokenizer (or a local path) to show token strings.
        max_batch: most rows per forward pass (integrated gradients' steps, perturbations).
        video_layout: ``"BTCHW"``, ``"BCTHW"`` or ``"auto"`` for 5-D clip inputs.
    """

    name = "attribution"
    #: values have a sign (for/against the target)
    signed: ClassVar[bool] = True

    def __init__(self, embedding_layer: str | None = None, tokenizer: Any = None, max_batch: int = 128,
                 video_layout: Literal["auto", "BTCHW", "BCTHW"] = "auto") -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch <= 0:
            raise ValueError(expected("max_batch", "an integer larger than 0", max_batch))
        self.embedding_layer = embedding_layer
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.video_layout = check_choice("video_layout", video_layout, ("auto", "BTCHW", "BCTHW"))
        self.background: ModelInputs | None = None

    def options(self) -> dict[str, Any]:
        """The method and its arguments of :func:`~lightning_xai.functional.attribution.attribute`."""
        return {"method": self.name}

    def settings(self) -> dict[str, Any]:
        shown = {k: _plain(v) for k, v in self.options().items() if not isinstance(v, torch.Generator)}
        return {"method": self.name, **shown}

    def _engine(self, names: tuple[str, ...]) -> Callable[..., AttributionResult]:
        """The function computing the values: :func:`~lightning_xai.functional.attribution.attribute` (LIME and
        Kernel SHAP have their own); ``names`` of the inputs, for its error messages."""
        return attribute

    def is_signed(self) -> bool:
        """Do this explainer's values have a sign?"""
        return self.signed

    def explain(self, model: nn.Module, inputs: ModelInputs, target: Target = "pred",
                scorer: Scorer | None = None) -> AttributionExplanation:
        scorer = scorer or Scorer(owner=self.name)
        keys = [str(i) for i in range(len(inputs.args))] + list(inputs.kwargs)
        flat = (*inputs.args, *inputs.kwargs.values())
        n_args = len(inputs.args)
        scoring = callable(target) and not isinstance(target, Tensor)

        def fwd(m: nn.Module, *tensors: Tensor) -> Any:
            out = scorer(m, ModelInputs(tuple(tensors[:n_args]), dict(zip(keys[n_args:], tensors[n_args:]))))
            return out if scoring else scorer.logits(out)

        with explanation_mode(model), torch.no_grad():
            logits = scorer.logits(scorer(model, inputs), scoring=scoring).float()
        classes = targets_of(logits, target, inputs)
        names = input_names(inputs)
        cpu = {n: t.detach().cpu() for n, t in zip(names, flat) if isinstance(t, Tensor)}
        kinds = {n: input_kind(n, t) for n, t in cpu.items()}
        layouts = {n: lay for n, t in cpu.items() if t.is_floating_point() and t.dim() == 5
                   and (lay := clip_layout(t, self.video_layout, self.name)) is not None}
        options = {k: self._by_position(k, v, names) for k, v in self.options().items()}
        background = None
        if self.background is not None:
            background = (*self.background.args, *self.background.kwargs.values())
        result = self._engine(tuple(names))(
            model, flat, classes, forward_fn=fwd, background=background,
            kinds=tuple(kinds.get(n, "tabular") for n in names), layouts=tuple(layouts.get(n) for n in names),
            embedding_layer=self.embedding_layer or "auto", max_batch=self.max_batch, **options)
        values = {n: v.detach().float().cpu() for n, v in zip(names, result.values) if v is not None}
        attention = cpu.get("attention_mask")
        self.tokenizer = load_tokenizer(self.tokenizer)
        tokens = {n: token_strings(self.tokenizer, cpu[n]) for n in values if kinds[n] == "tokens"}
        keep = {n: shown_tokens(self.tokenizer, cpu[n], attention) for n in tokens}

        def out(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach().float().cpu()

        return AttributionExplanation(
            method=self.name, values=values, inputs=cpu, kinds=kinds, signed=self.is_signed(),
            target=None if scoring else classes.cpu(),  # type: ignore[union-attr]
            prediction=logits.argmax(-1).cpu() if logits.dim() == 2 else None,
            confidence=logits.softmax(-1).max(-1).values.cpu() if logits.dim() == 2 else None,
            base_values=out(result.base_values), layouts={n: lay for n, lay in layouts.items() if n in values},
            time_first=tuple(n for n in values if cpu[n].is_floating_point()
                             and spectrogram_time_first(model, cpu[n])),
            tokens=tokens, keep=keep, settings=self.settings(), outputs=out(result.outputs),
            completeness_error=out(result.completeness_error), relative_error=out(result.relative_error),
            converged=None if result.converged is None else result.converged.detach().cpu(),
            n_steps_used=None if result.n_steps_used is None else result.n_steps_used.detach().cpu())

    def _by_position(self, key: str, value: Any, names: list[str]) -> Any:
        """A dict keyed by input display name (a baseline, window or stride per input) keyed by position."""
        if not isinstance(value, dict):
            return value
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(expected(key, f"a dict keyed by input names {names}", unknown))
        return {names.index(k): v for k, v in value.items()}


def _plain(value: Any) -> Any:
    """A setting as plain values (a tensor as ``"tensor(shape)"``), for artifacts and snapshots."""
    if isinstance(value, Tensor):
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def check_baseline(baseline: Any, allowed: tuple[str, ...] = ("zeros", "blur", "mean")) -> Any:
    """A baseline argument: one of ``allowed``, a number, a tensor, a tuple/list of tensors or a dict by input
    name (shapes are checked against the inputs at :meth:`~AttributionExplainer.explain`)."""
    if isinstance(baseline, str):
        return check_choice("baseline", baseline, allowed)
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float, Tensor, tuple, list, dict)):
        raise TypeError(expected("baseline", f"one of {list(allowed)}, a number, a tensor, a tuple of tensors or a "
                                 "dict of them by input name", type(baseline).__name__))
    return baseline


def check_feature_masks(mask: Any) -> Any:
    """A ``feature_mask`` argument: ``None``, an integer tensor or nested list of integers (one explained input), a
    tuple/list of tensors (or ``None``) per explained input, or a dict of them by input name (shapes are checked
    against the inputs at :meth:`~AttributionExplainer.explain`).

    Example:
        >>> check_feature_masks({"image": [[0, 0, 1, 1]]})["image"].shape
        torch.Size([1, 4])
    """
    if mask is None:
        return None
    if isinstance(mask, dict):
        return {k: None if v is None else check_feature_mask(v, f"feature_mask[{k!r}]") for k, v in mask.items()}
    if isinstance(mask, (tuple, list)) and mask and all(m is None or isinstance(m, Tensor) for m in mask):
        return tuple(None if m is None else check_feature_mask(m, f"feature_mask[{i}]") for i, m in enumerate(mask))
    return check_feature_mask(mask)


#: ``"zeros"`` | ``"blur"`` | ``"mean"`` | float | Tensor | tuple of tensors | dict of them by input name
Baseline = Any


class Baselined(AttributionExplainer):
    """An attribution explainer with a ``baseline`` (one map per sample unless the baseline is given per probe)."""

    def __init__(self, baseline: Baseline = "zeros", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.baseline = check_baseline(baseline)
        self.n_background = 32 if isinstance(baseline, str) and baseline == "mean" else 0
        # one map per sample, unless the baseline is given per probe (a tensor may hold one row per probe)
        self.splittable = isinstance(baseline, (str, int, float))

    def options(self) -> dict[str, Any]:
        return {**super().options(), "baseline": self.baseline}
