"""AttentionCallback: raw attention, attention rollout and gradient-weighted rollout of the probe every validation
epoch, for text, vision, audio and video transformers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import check_choices, expected
from lightning_xai.adapters import ModelInputs, TargetSpec
from lightning_xai.callbacks._emit.attention import emit_attention
from lightning_xai.callbacks._emit.faithfulness import log_faithfulness
from lightning_xai.callbacks._emit.attribution import AttributionOptions
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.explainers import AttentionExplainer, AttentionExplanation, Explanation, get_explainer
from lightning_xai.explainers.faithfulness import FaithfulnessCheck
from lightning_xai.functional.attention import ATTENTION_METHODS, find_attention_modules
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

__all__ = ["AttentionCallback"]


class AttentionCallback(XAICallback):
    """Attention maps of the probe every validation epoch: ``"attention"`` (one layer's attention, every layer and
    head of the first probe), ``"rollout"`` (Abnar & Zuidema 2020) and ``"grad_rollout"`` (Chefer et al. 2021).

    The exact attention probabilities are captured whatever implementation the model runs (Hugging Face models are
    switched to eager attention for the pass only; ``nn.MultiheadAttention`` is called with ``need_weights=True``
    for the pass only) and the model is restored exactly. Per method TensorBoard shows the figure of the input kind
    (token plots, heatmaps over images, frame strips, spectrograms) under ``xai/attention/<method>/<input>``; for
    ``"attention"`` also ``xai/attention/attention/heads``, a layer x head grid of the first probe (query x key
    matrices with the tokens on both axes for text, the class token's row on the patch grid for images) with the
    per-layer mean. ``attention_<method>.npz`` holds ``scores`` (text ``(num_samples, seq_len)``, images
    ``(num_samples, grid_h, grid_w)``, video ``(num_samples, frames, grid_h, grid_w)``), ``maps`` on the input, and
    for ``"attention"`` ``raw`` ``(max_raw, layers, heads, seq, seq)`` and ``head_scores``. Between methods,
    ``xai/attention/agreement/<a>_vs_<b>``: the median over probes of the Spearman correlation of their maps.
    TimeSformer's divided space-time attention is composed per block (temporal, then spatial; see
    :mod:`lightning_xai.explainers.attention`). Window attention (Swin) is refused at ``setup`` with the reason.

    Args:
        num_samples: probe samples to explain.
        methods: some of ``"attention"``, ``"rollout"``, ``"grad_rollout"``.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads (``attention``, ``rollout``).
        discard_ratio: fraction of each layer's smallest weights dropped in ``rollout``.
        layer: the last layer rolled out (the layer shown by ``attention``); ``None``: the last.
        use_cls_token: the class token's row (``True``), the mean row (``False``), or the class token when the
            model has one (``None``).
        weighted_by_predictions: multiply each probe's maps by the probability of its explained class.
        attention_modules: dotted names (or patterns) of the modules whose output holds the probabilities.
        max_raw: probes whose raw probabilities ``"attention"`` keeps.
        input_key: the explained input (position or keyword); default the token ids, else the first float input.
        tokenizer: a Hugging Face tokenizer (or a local path) for token strings.
        reshape_transform: callable (or dotted path) putting the tokens on the input's grid (default: found).
        reshape_kwargs: its keyword arguments.
        video_layout: ``"BTCHW"``, ``"BCTHW"`` or ``"auto"`` for 5-D inputs.
        mean: per-channel normalisation mean to undo in image figures.
        std: per-channel normalisation std to undo in image figures.
        compare: when other attribution callbacks (SHAPCallback, AttributionCallback, GradCAMCallback) run on the
            same Trainer, explain this probe with their methods too and log ``xai/attention/agreement/<a>_vs_<b>``
            for each attention method ``a`` and attribution method ``b`` ("attention is not explanation": the
            number instead of the slogan). Their explanations cost what they cost in their own callback.
        faithfulness: also score the maps of 4-D images by deletion and insertion (explained class) against a
            seeded random map, each attention method's and, with ``compare``, each compared method's side by side:
            ``xai/attention/faithfulness/<method>/{deletion_auc,insertion_auc,...}``.
        faithfulness_steps: steps of the deletion and insertion curves.
        faithfulness_baseline: what replaces removed pixels: ``"blur"``, ``"mean"`` or ``"zero"``.
        **base: ``probe``, ``batch_to_inputs``, ``forward_fn``, ``target``, ``output``, ``class_names``,
            ``every_n_epochs``, ``stages``, ``on_error``, ``log_dir``, ``name``, ``figures``,
            ``render_every_n_epochs`` as in :class:`XAICallback`.

    Example:
        >>> cb = AttentionCallback(methods=("rollout",), use_cls_token=False, head_fusion="max", discard_ratio=0.9)
        >>> cb.methods, cb.explainers["rollout"].discard_ratio
        (('rollout',), 0.9)
    """

    name = "attention"

    def __init__(
        self,
        num_samples: int = 8,
        methods: Sequence[str] | str = ATTENTION_METHODS,
        head_fusion: Literal["mean", "max", "min"] = "mean",
        discard_ratio: float = 0.0,
        layer: int | None = None,
        use_cls_token: bool | None = None,
        weighted_by_predictions: bool = False,
        attention_modules: Sequence[str] | str | None = None,
        max_raw: int = 1,
        input_key: int | str | None = None,
        tokenizer: Any = None,
        reshape_transform: Callable[[Tensor], Tensor] | str | None = None,
        reshape_kwargs: dict[str, Any] | None = None,
        video_layout: Literal["auto", "BTCHW", "BCTHW"] = "auto",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        compare: bool = True,
        faithfulness: bool = False,
        faithfulness_steps: int = 20,
        faithfulness_baseline: Literal["blur", "mean", "zero"] = "blur",
        probe: Any = None,
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
        shared = {"layer": layer, "use_cls_token": use_cls_token, "weighted_by_predictions": weighted_by_predictions,
                  "attention_modules": attention_modules, "input_key": input_key, "tokenizer": tokenizer,
                  "reshape_transform": reshape_transform, "reshape_kwargs": reshape_kwargs,
                  "video_layout": video_layout}
        own: dict[str, dict[str, Any]] = {"attention": {"head_fusion": head_fusion, "max_raw": max_raw},
                                          "rollout": {"head_fusion": head_fusion, "discard_ratio": discard_ratio},
                                          "grad_rollout": {}}
        chosen = check_choices("methods", methods, ATTENTION_METHODS)
        explainers: dict[str, AttentionExplainer] = {
            m: get_explainer(m, **shared, **own[m]) for m in chosen}  # type: ignore[misc]
        layouts = next(iter(explainers.values())).layouts
        for explainer in explainers.values():  # the token layout, found once, serves every method
            explainer.layouts = layouts
        super().__init__(num_samples=num_samples, probe=probe, batch_to_inputs=batch_to_inputs, forward_fn=forward_fn,
                         target=target, output=output, class_names=class_names, every_n_epochs=every_n_epochs,
                         stages=stages, on_error=on_error, log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs,
                         explainer=next(iter(explainers.values())))
        self.explainers = explainers
        self.methods = tuple(explainers)
        self.head_fusion, self.discard_ratio, self.layer, self.max_raw = head_fusion, discard_ratio, layer, max_raw
        self.use_cls_token, self.weighted_by_predictions = use_cls_token, weighted_by_predictions
        self.attention_modules, self.input_key, self.tokenizer = attention_modules, input_key, tokenizer
        for arg, value in (("mean", mean), ("std", std)):
            if value is not None and (isinstance(value, str) or len(value) not in (1, 3)):
                raise ValueError(expected(arg, "None or a sequence of 1 or 3 floats", value))
        self.mean, self.std = mean, std
        if not isinstance(compare, bool):
            raise TypeError(expected("compare", "True or False", compare))
        self.compare = compare
        self.faithfulness, self.faithfulness_steps, self.faithfulness_baseline = (
            faithfulness, faithfulness_steps, faithfulness_baseline)
        self._faith = FaithfulnessCheck.from_args(faithfulness, faithfulness_steps, faithfulness_baseline,
                                                  warn=rank_zero_warn)
        if self._faith is not None:
            self._id.update(faithfulness=True, faithfulness_steps=faithfulness_steps,
                            faithfulness_baseline=faithfulness_baseline)
        self._id.update(methods=list(self.methods), head_fusion=head_fusion, discard_ratio=discard_ratio, layer=layer,
                        use_cls_token=use_cls_token, weighted_by_predictions=weighted_by_predictions)

    @override
    def _check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        find_attention_modules(pl_module, self.attention_modules)  # names, candidates, Swin: said at setup

    @override
    def _explainers(self) -> list[AttentionExplainer]:  # type: ignore[override]
        return list(self.explainers.values())

    @override
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> dict[str, Any]:
        own = {m: self._explain_with(e, model, inputs) for m, e in self.explainers.items()}
        if not self._split.writer:  # another rank holds its share only: rank zero compares and measures the whole
            return {"attention": own, "others": {}, "faithfulness": {}}
        others = self._siblings(model, inputs) if self.compare else {}
        return {"attention": own, "others": others, "faithfulness": self._faithful(model, inputs, own, others)}

    def _faithful(self, model: nn.Module, inputs: ModelInputs, own: dict[str, AttentionExplanation],
                  others: dict[str, Explanation]) -> dict[str, Any]:
        """Deletion/insertion of every map of the attention's image input, attention methods and compared ones."""
        if self._faith is None:
            return {}
        expl = next(iter(own.values()))
        key = next(k for k, n in zip([*range(len(inputs.args)), *inputs.kwargs], expl.inputs) if n == expl.key)
        x = inputs.get(key)
        if expl.target is None or x.dim() != 4:
            self._faith.skip("a callable target" if expl.target is None else f"a {expl.kinds[expl.key]} input")
            return {}
        maps = {m: e.values[e.key] for m, e in own.items()}
        for m, e in others.items():
            theirs = e.maps().get(expl.key)
            if theirs is not None and tuple(theirs.shape) == tuple(maps[next(iter(maps))].shape):
                maps[m] = theirs
        return self._faith.measure_input(self.scorer, model, inputs, key, maps, expl.target.to(x.device))

    def _siblings(self, model: nn.Module, inputs: ModelInputs) -> dict[str, Explanation]:
        """The attribution methods of the other callbacks on the Trainer (SHAPCallback, AttributionCallback,
        GradCAMCallback, ...) on this probe and target; one that fails is named in a warning and left out."""
        trainer = getattr(model, "trainer", None) if isinstance(model, pl.LightningModule) else None
        out: dict[str, Explanation] = {}
        for cb in getattr(trainer, "callbacks", None) or []:
            if cb is self or isinstance(cb, AttentionCallback) or not isinstance(cb, XAICallback) or (
                    cb.explainer is None):
                continue
            try:
                found = cb.explain_all(trainer, model, inputs, self.target)  # type: ignore[arg-type]
            except Exception as err:  # noqa: BLE001 - the comparison is optional; the attention maps are not
                rank_zero_warn(f"lightning_xai: AttentionCallback could not compare with {type(cb).__name__} "
                               f"({type(err).__name__}: {err}); its agreement is not logged.", category=RuntimeWarning)
                continue
            out.update({m: e for m, e in found.items() if m not in self.explainers and m not in out})
        return out

    @override
    def _emit(self, result: dict[str, Any], inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        own: dict[str, AttentionExplanation] = result["attention"]
        titles = self._titles(next(iter(own.values())), inputs, probe)
        emit_attention(own, titles, probe.indices, AttributionOptions(self.mean, self.std, self._class_name), sink,
                       others=result["others"])
        if result["faithfulness"]:  # attention and attribution methods side by side, on the same probe
            sink.json("faithfulness", {m: log_faithfulness(sink, m, measured, self._faith)  # type: ignore[arg-type]
                                       for m, measured in result["faithfulness"].items()})
            sink.commit(method="faithfulness", methods=list(result["faithfulness"]))
