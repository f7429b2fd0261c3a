"""GradCAMCallback: class activation maps of the probe images every validation epoch and on checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import check_choices, check_non_negative_int, check_probability, expected
from lightning_xai.adapters import ModelInputs, TargetSpec
from lightning_xai.callbacks._emit.gradcam import CAMFigureOptions, emit_gradcam
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.explainers import CAMExplainer, CAMExplanation
from lightning_xai.explainers.faithfulness import FaithfulnessCheck
from lightning_xai.functional.cam import CAM_METHODS
from lightning_xai.functional._layers import resolve_layer
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

__all__ = ["GradCAMCallback"]


class GradCAMCallback(XAICallback):
    """Grad-CAM family heatmaps over the probe images (or one per frame for video), every validation epoch.

    TensorBoard shows, per method, a grid of the probe images with the heatmap overlaid (tag
    ``xai/gradcam/<method>``), each tile titled with true label, predicted label and confidence; when the batch
    carries ground-truth masks, the localisation scores ``xai/gradcam/<method>/pointing_game`` and
    ``.../energy_in_mask``. Arrays ``gradcam_<method>.npy`` of shape ``(num_samples, H, W)`` (or
    ``(num_samples, T, H, W)``) are written in the probe's order and listed in ``<log_dir>/xai/manifest.jsonl``.

    The gradient family (``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``, ``hirescam``,
    ``gradcamelementwise``) runs on a pure-torch path; every other pytorch_grad_cam method runs through
    pytorch_grad_cam inside the observer guard.

    Args:
        num_samples: probe images to explain.
        methods: one or several of :data:`~lightning_xai.functional.CAM_METHODS`.
        target_layer: dotted name of the layer to explain (``"layer4.1"``); ``None`` finds it by structure (see
            :func:`~lightning_xai.functional.find_target_layer`): the last feature map with spatial extent, or the
            last attention block's norm with the reshape of its token grid.
        reshape_transform: callable (or dotted path, e.g. ``"lightning_xai.functional.token_reshape_transform"``)
            mapping the layer's activation to ``(B, C, h, w)`` (``(B, C, t, h, w)`` for clips).
        reshape_kwargs: keyword arguments for ``reshape_transform`` (``{"grid": [3, 5], "num_prefix_tokens": 2}``).
        input_key: which model input is explained (position or keyword); default: the first float 4-D/5-D input
            (an image or clip), else the first float 3-D one (a spectrogram ``(B, frames, mel)``/``(B, mel,
            frames)``, drawn as time x frequency like SHAP's spectrogram figure).
        video_layout: ``"BTCHW"``, ``"BCTHW"`` or ``"auto"`` for 5-D inputs.
        mean: per-channel normalisation mean to undo in overlays (default: ImageNet's when the pixel range says so).
        std: per-channel normalisation std to undo in overlays.
        alpha: heatmap opacity in overlays.
        pointing_tolerance: pixels by which masks are dilated in the pointing game; ``None`` uses Zhang et al.'s
            15 pixels at 224², scaled to the image size (2 pixels at 32²).
        faithfulness: also score each method's maps of 4-D images by deletion and insertion (explained class)
            against a random map from a seeded generator: ``xai/gradcam/faithfulness/<method>/{deletion_auc,
            insertion_auc}`` and their ``..._random`` controls (means); per-sample values in the summary JSON.
        faithfulness_steps: steps of the deletion and insertion curves.
        faithfulness_baseline: what replaces removed pixels: ``"blur"``, ``"mean"`` or ``"zero"``.
        **base: ``probe``, ``batch_to_inputs``, ``forward_fn``, ``target``, ``output``, ``class_names``,
            ``every_n_epochs``, ``stages``, ``on_error``, ``log_dir``, ``name``, ``figures``,
            ``render_every_n_epochs`` as in :class:`XAICallback`.

    Example:
        >>> cb = GradCAMCallback(num_samples=8, methods=("gradcam", "gradcam++"))
        >>> cb.methods
        ('gradcam', 'gradcam++')
    """

    name = "gradcam"

    def __init__(
        self,
        num_samples: int = 8,
        methods: Sequence[str] | str = ("gradcam",),
        target_layer: str | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | str | None = None,
        reshape_kwargs: dict[str, Any] | None = None,
        input_key: int | str | None = None,
        video_layout: Literal["auto", "BTCHW", "BCTHW"] = "auto",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        alpha: float = 0.5,
        pointing_tolerance: int | None = None,
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
        explainers = {m: CAMExplainer(m, target_layer, reshape_transform, reshape_kwargs, input_key, video_layout)
                      for m in check_choices("methods", methods, CAM_METHODS)}
        super().__init__(num_samples=num_samples, probe=probe, batch_to_inputs=batch_to_inputs, forward_fn=forward_fn,
                         target=target, output=output, class_names=class_names, every_n_epochs=every_n_epochs,
                         stages=stages, on_error=on_error, log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs,
                         explainer=next(iter(explainers.values())))
        self.explainers = explainers
        self.methods = tuple(explainers)
        first = next(iter(explainers.values()))
        self.target_layer, self.reshape_transform = target_layer, first.reshape_transform
        self.video_layout, self.input_key = video_layout, input_key
        for arg, value in (("mean", mean), ("std", std)):
            if value is not None and (isinstance(value, str) or len(value) not in (1, 3)):
                raise ValueError(expected(arg, "None or a sequence of 1 or 3 floats", value))
        self.mean, self.std = mean, std
        self.alpha = check_probability("alpha", alpha)
        if pointing_tolerance is not None:
            check_non_negative_int("pointing_tolerance", pointing_tolerance)
        self.pointing_tolerance = pointing_tolerance
        self._id.update(methods=list(self.methods), target_layer=target_layer)
        self.faithfulness, self.faithfulness_steps, self.faithfulness_baseline = (
            faithfulness, faithfulness_steps, faithfulness_baseline)
        self._faith = FaithfulnessCheck.from_args(faithfulness, faithfulness_steps, faithfulness_baseline,
                                                  warn=rank_zero_warn)
        if self._faith is not None:
            self._id.update(faithfulness=True, faithfulness_steps=faithfulness_steps,
                            faithfulness_baseline=faithfulness_baseline)

    @override
    def _check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.target_layer is not None:
            resolve_layer(pl_module, self.target_layer)

    @override
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> dict[str, Any]:
        first, *others = self.explainers.values()
        out: dict[str, CAMExplanation] = {first.method: self._explain_with(first, model, inputs)}  # type: ignore
        for explainer in others:  # one layer for every method: the first one's (given or found once)
            explainer.layer = first.layer
            out[explainer.method] = self._explain_with(explainer, model, inputs)  # type: ignore[assignment]
        expl = out[first.method]
        faith: dict[str, Any] = {}
        key = next(k for k, n in zip([*range(len(inputs.args)), *inputs.kwargs], expl.inputs) if n == expl.key)
        x = inputs.get(key)
        measuring = self._faith is not None and self._split.writer  # another rank holds its share only
        if measuring and (expl.target is None or x.dim() != 4):
            self._faith.skip("a callable target" if expl.target is None else f"a {expl.kinds[expl.key]} input")
        elif measuring:
            faith = self._faith.measure_input(self.scorer, model, inputs, key,
                                              {m: e.values[e.key] for m, e in out.items()}, expl.target.to(x.device))
        return {"explanations": out, "faithfulness": faith}

    @override
    def _emit(self, result: dict[str, Any], inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        explanations: dict[str, CAMExplanation] = result["explanations"]
        titles = self._titles(next(iter(explanations.values())), inputs, probe)
        emit_gradcam(explanations, titles, probe.indices, inputs.mask,
                     CAMFigureOptions(self.mean, self.std, self.alpha, self.pointing_tolerance), sink,
                     faith=result["faithfulness"], check=self._faith)
