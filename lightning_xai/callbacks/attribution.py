"""AttributionCallback: several attribution methods on the same probe every validation epoch, side by side."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import expected
from lightning_xai.adapters import ModelInputs, TargetSpec
from lightning_xai.callbacks._emit.attribution import AttributionOptions, emit_attribution, joint_map
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.explainers import Explainer, Explanation, explainer_arguments, get_explainer, list_explainers
from lightning_xai.functional.drift import topk_iou
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

__all__ = ["AttributionCallback"]

#: arguments the callback hands to every method's explainer that takes them
_SHARED = ("embedding_layer", "tokenizer", "seed")


class AttributionCallback(XAICallback):
    """Explain the probe with several registered explainers every validation epoch, and compare them.

    Each method is an explainer of :mod:`lightning_xai.explainers` (any registered name: the Grad-CAM family,
    ``shap``, and every method registered later, e.g. by a third party). Per method TensorBoard shows the figures
    its input kinds call for (signed heatmaps over images, token plots, spectrograms, frame strips) under
    ``xai/attribution/<method>/<input>``, and ``attribution_<method>.npz`` holds one array per explained input
    (probe order) with ``targets``, ``predictions`` and ``base_values`` where defined. Across methods: one figure
    with every method's map of each probe side by side (``xai/attribution/comparison``) and their rank agreement,
    ``xai/attribution/agreement/<a>_vs_<b>`` (median over probes of the Spearman correlation of |attribution|),
    because methods that disagree are a warning sign in themselves. Stochastic methods (an explainer with a
    ``seed`` and ``stochastic = True``) are run a second time with ``seed + 1``:
    ``xai/attribution/<method>/stability_iou`` is the mean top-10% IoU of the two runs.

    Args:
        num_samples: probe samples to explain.
        methods: registered explainer names (:func:`lightning_xai.explainers.list_explainers`).
        method_kwargs: arguments per method, e.g. ``{"shap": {"n_background": 16}}``.
        embedding_layer: the token embedding layer, handed to every method that takes one.
        tokenizer: a Hugging Face tokenizer (or a local path) for token strings, likewise.
        seed: seed of the stochastic methods' own generators, likewise.
        stability: measure the stability of stochastic methods (one more run each).
        mean: per-channel normalisation mean to undo in image figures.
        std: per-channel normalisation std to undo in image figures.
        background: baselines for methods that want them (``shap``) instead of drawing them from the data.
        **base: ``probe``, ``batch_to_inputs``, ``forward_fn``, ``target``, ``output``, ``class_names``,
            ``every_n_epochs``, ``stages``, ``on_error``, ``log_dir``, ``name``, ``figures``,
            ``render_every_n_epochs`` as in
            :class:`~lightning_xai.XAICallback`.

    Example:
        >>> cb = AttributionCallback(methods=("gradcam", "shap"), method_kwargs={"shap": {"n_background": 8}})
        >>> list(cb.explainers), cb.explainers["shap"].n_background
        (['gradcam', 'shap'], 8)
    """

    name = "attribution"

    def __init__(
        self,
        num_samples: int = 8,
        methods: Sequence[str] = ("shap",),
        method_kwargs: dict[str, dict[str, Any]] | None = None,
        embedding_layer: str | None = None,
        tokenizer: Any = None,
        seed: int = 0,
        stability: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        probe: Any = None,
        background: Any = None,
        batch_to_inputs: Callable[..., ModelInputs] | str | None = None,
        forward_fn: Callable[..., Any] | str | None = None,
        target: TargetSpec = "pred",
        output: str | int | Callable[[Any], Tensor] | None = None,
        class_names: Sequence[str] | None = None,
        every_n_epochs: int = 1,
        stages: Sequence[Stage] = ("fit", "validate", "test"),
        on_error: Literal["warn", "raise"] = "warn",
        log_dir: str | None = None,
        name: str | None = None,
        figures: Literal["background", "inline"] = "background",
        render_every_n_epochs: int = 1,
    ) -> None:
        explainers = _build(methods, method_kwargs, {"embedding_layer": embedding_layer, "tokenizer": tokenizer,
                                                     "seed": seed})
        super().__init__(num_samples=num_samples, probe=probe, batch_to_inputs=batch_to_inputs, forward_fn=forward_fn,
                         target=target, output=output, class_names=class_names, every_n_epochs=every_n_epochs,
                         stages=stages, on_error=on_error, log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs,
                         explainer=next(iter(explainers.values())), background=background)
        self.explainers = explainers
        self.methods = tuple(explainers)
        self.method_kwargs = dict(method_kwargs or {})
        self.embedding_layer, self.tokenizer, self.seed = embedding_layer, tokenizer, seed
        if not isinstance(stability, bool):
            raise TypeError(expected("stability", "True or False", stability))
        self.stability = stability
        self.mean, self.std = mean, std
        self._id.update(methods=list(self.methods))

    @override
    def _explainers(self) -> list[Explainer]:
        return list(self.explainers.values())

    @override
    def _named_explainers(self) -> dict[str, Explainer]:
        return dict(self.explainers)

    @override
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> dict[str, Any]:
        out: dict[str, Explanation] = {}
        stability: dict[str, Tensor] = {}
        for method, explainer in self.explainers.items():
            out[method] = self._explain_with(explainer, model, inputs)
            if self.stability and getattr(explainer, "stochastic", False):
                again = copy.copy(explainer)
                again.seed = explainer.seed + 1  # type: ignore[attr-defined]
                second = self._explain_with(again, model, inputs)  # collective: on every rank
                if not self._split.writer:  # another rank holds its share only: rank zero compares the whole
                    continue
                a, b = joint_map(out[method]), joint_map(second)
                flat = (a.amax(1) <= a.amin(1)) | (b.amax(1) <= b.amin(1))  # all-zero maps rank nothing: NaN
                stability[method] = topk_iou(a, b, k=0.1).float().masked_fill(flat, float("nan"))
        return {"explanations": out, "stability": stability}

    @override
    def _emit(self, result: dict[str, Any], inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        explanations: dict[str, Explanation] = result["explanations"]
        titles = self._titles(next(iter(explanations.values())), inputs, probe)
        emit_attribution(explanations, result["stability"], titles, probe.indices,
                         AttributionOptions(self.mean, self.std, self._class_name), sink)


def _build(methods: Sequence[str], method_kwargs: dict[str, dict[str, Any]] | None,
           shared: dict[str, Any]) -> dict[str, Explainer]:
    """One explainer per method name, with its ``method_kwargs`` and the shared arguments it takes."""
    if isinstance(methods, str) or not methods or len(set(methods)) != len(methods):
        raise ValueError(expected("methods", f"a non-empty list of distinct registered explainers, of "
                                  f"{list_explainers()}", methods))
    extra = dict(method_kwargs or {})
    unknown = sorted(set(extra) - set(methods))
    if unknown:
        raise ValueError(expected("method_kwargs", f"arguments of the chosen methods {list(methods)}", unknown))
    out = {}
    for method in methods:
        if method not in list_explainers():
            raise ValueError(expected("methods", f"registered explainers, of {list_explainers()}", method))
        kwargs = dict(extra.get(method) or {})
        params = explainer_arguments(method)
        for key, value in shared.items():
            if value is not None and key not in kwargs and (key in params or "**" in params):
                kwargs[key] = value
        try:
            out[method] = get_explainer(method, **kwargs)
        except TypeError as err:
            raise ValueError(expected("method_kwargs", f"arguments of the {method!r} explainer", kwargs)
                             + f" ({err})") from err
    return out

