"""GradCAMCallback: class activation maps of the probe images every validation epoch and on checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import check_choices, check_non_negative_int, check_probability, expected
from lightning_xai.adapters import ModelInputs, TargetSpec, resolve_callable
from lightning_xai.callbacks._faithfulness import FaithfulnessCheck, log_faithfulness
from lightning_xai.callbacks._gradcam_checks import first_sample, flat_probes, reshape_name, warn_flat
from lightning_xai.callbacks._shap_emit import input_kind, spectrogram_time_first
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.functional._layers import find_target_layer, resolve_layer, suggest_layers
from lightning_xai.functional.cam import CAM_METHODS, cam
from lightning_xai.functional.localization import energy_in_mask, pointing_game, zhang_tolerance
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

__all__ = ["GradCAMCallback"]

_PRETTY = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "layercam": "Layer-CAM",
           "hirescam": "HiResCAM", "scorecam": "Score-CAM", "eigencam": "Eigen-CAM", "ablationcam": "Ablation-CAM"}


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
            ``every_n_epochs``, ``stages``, ``on_error``, ``log_dir``, ``name`` as in :class:`XAICallback`.

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
    ) -> None:
        super().__init__(num_samples, probe, batch_to_inputs, forward_fn, target, output, class_names,
                         every_n_epochs, stages, on_error, log_dir, name)
        self.methods = check_choices("methods", methods, CAM_METHODS)
        if target_layer is not None and (not isinstance(target_layer, str) or not target_layer):
            raise ValueError(expected("target_layer", "None or a dotted module name such as 'layer4.1'", target_layer))
        self.target_layer = target_layer
        self.reshape_transform = resolve_callable("reshape_transform", reshape_transform)
        if reshape_kwargs is not None:
            if self.reshape_transform is None or not isinstance(reshape_kwargs, dict):
                raise ValueError(expected("reshape_kwargs", "a dict, given with `reshape_transform=`", reshape_kwargs))
            self.reshape_transform = partial(self.reshape_transform, **{  # YAML lists: grid=[3, 5] -> (3, 5)
                k: tuple(v) if isinstance(v, list) else v for k, v in reshape_kwargs.items()})
        if video_layout not in ("auto", "BTCHW", "BCTHW"):
            raise ValueError(expected("video_layout", "one of ['auto', 'BTCHW', 'BCTHW']", video_layout))
        self.video_layout = video_layout
        self.input_key = input_key
        for arg, value in (("mean", mean), ("std", std)):
            if value is not None and (isinstance(value, str) or len(value) not in (1, 3)):
                raise ValueError(expected(arg, "None or a sequence of 1 or 3 floats", value))
        self.mean, self.std = mean, std
        self.alpha = check_probability("alpha", alpha)
        if pointing_tolerance is not None:
            check_non_negative_int("pointing_tolerance", pointing_tolerance)
        self.pointing_tolerance = pointing_tolerance
        self._layer: tuple[str, Callable[[Tensor], Tensor] | None] | None = None
        self._id.update(methods=list(self.methods), target_layer=target_layer)
        self._faith = FaithfulnessCheck.attach(self, faithfulness, faithfulness_steps, faithfulness_baseline)

    @override
    def _check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.target_layer is not None:
            resolve_layer(pl_module, self.target_layer)

    def _image_key(self, inputs: ModelInputs) -> int | str:
        found = {**dict(enumerate(inputs.args)), **inputs.kwargs}
        spectrogram = next((k for k, v in found.items() if v.is_floating_point() and v.dim() == 3), None)
        key = self.input_key if self.input_key is not None else (
            inputs.image_key if inputs.image_key is not None else spectrogram)
        x = found.get(key) if key is not None and not isinstance(key, bool) else None
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() not in (3, 4, 5):
            desc = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in found.items())
            raise ValueError(
                f"GradCAMCallback explains images, video clips or spectrograms (a floating tensor of 3, 4 or 5 dims), "
                f"but {'input ' + repr(key) + ' is not one: ' if self.input_key is not None else ''}the model inputs "
                f"are [{desc}]. Set `input_key=` to that input, or use an attribution callback made for this kind of "
                "input (SHAP for tokens and tabular data)."
            )
        return key  # type: ignore[return-value]

    def _video_to_model_layout(self, x: Tensor) -> str | None:
        if x.dim() != 5:
            return None
        if self.video_layout != "auto":
            return self.video_layout
        return "BCTHW" if x.shape[1] in (1, 3) and x.shape[2] not in (1, 3) else "BTCHW"

    @override
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> dict[str, Any]:
        key = self._image_key(inputs)
        x = inputs.get(key)
        score_mode = callable(self.target)

        def fwd(m: nn.Module, image: Tensor) -> Tensor:
            out = self._model_output(m, inputs.replace(key, image))
            return out if score_mode else self._logits(out)

        with torch.no_grad():
            logits = self._logits(self._model_output(model, inputs))
        target: Tensor | Callable[[Any], Tensor] = self.target if score_mode else self._targets(logits, inputs)  # type: ignore[assignment]
        if self._layer is None:
            if self.target_layer is not None:
                self._layer = (self.target_layer, self.reshape_transform)
            else:  # on one sample of every input (an image+text model needs its text cut alike)
                one = first_sample(inputs)

                def fwd_one(m: nn.Module, image: Tensor) -> Tensor:
                    out = self._model_output(m, one.replace(key, image))
                    return out if score_mode else self._logits(out)

                name, reshape = find_target_layer(model, (one.get(key),), forward_fn=fwd_one)  # by structure
                self._layer = (name, self.reshape_transform or reshape)
        name, reshape = self._layer
        layer = resolve_layer(model, name)
        maps = {
            m: cam(model, (x,), target, layer, method=m, forward_fn=fwd, reshape_transform=reshape).float().cpu()
            for m in self.methods
        }
        flat = {m: flat_probes(v) for m, v in maps.items()}
        probs = logits.float().softmax(-1) if logits.dim() == 2 else None
        faith: dict[str, Any] = {}
        if self._faith and (callable(target) or x.dim() != 4):
            self._faith.skip("a callable target" if callable(target) else f"a {input_kind(str(key), x)} input")
        elif self._faith:
            faith = self._faith.measure_input(self, model, inputs, key, maps, target)
        return {
            **({"faithfulness": faith} if self._faith else {}),
            "maps": maps,
            "layer": name,
            "reshape": reshape_name(reshape),
            "flat": flat,
            "candidates": suggest_layers(model) if any(f and all(f) for f in flat.values()) else None,
            "image": x.detach().float().cpu(),
            "layout": self._video_to_model_layout(x),
            "kind": input_kind(str(key), x),
            "time_first": spectrogram_time_first(model, x),
            "pred": logits.argmax(-1).cpu() if logits.dim() == 2 else None,
            "confidence": probs.max(-1).values.cpu() if probs is not None else None,
            "target": None if score_mode else target.cpu(),  # type: ignore[union-attr]
        }

    @override
    def _emit(self, result: dict[str, Any], inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        from lightning_xai.render import frame_strip, overlay_grid

        image, shown = result["image"], dict(result["maps"])
        if result["layout"] == "BCTHW":
            image = image.permute(0, 2, 1, 3, 4)
        if image.dim() == 3:  # a spectrogram, drawn (B, 1, mel, frames): time right, frequency up
            flip = (lambda t: t.transpose(1, 2)) if result.get("time_first") else (lambda t: t)
            image, shown = flip(image).unsqueeze(1), {m: flip(v) for m, v in shown.items()}
        titles = self._titles(result, inputs, probe)
        ev = sink.event
        warn_flat(result["layer"], result["flat"], result["candidates"], ev.epoch)
        for method, maps in result["maps"].items():
            finite = torch.isfinite(maps)
            bad = int((~finite).sum())
            if bad:
                rows = sorted({int(i) for i in (~finite).flatten(1).any(1).nonzero().flatten()})
                rank_zero_warn(
                    f"lightning_xai: {_PRETTY.get(method, method)} gave {bad} non-finite values for probes {rows} at "
                    f"epoch {ev.epoch}; logged as xai/gradcam/{method}/nonfinite and left blank in the plot.",
                    category=RuntimeWarning,
                )
            sink.scalar(f"{method}/nonfinite", bad)
            sink.scalar(f"{method}/flat", sum(result["flat"][method]) / max(len(result["flat"][method]), 1))
            suptitle = f"{_PRETTY.get(method, method)} · layer {result['layer']} · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
            if image.dim() == 5:
                fig = partial(frame_strip, image, maps, titles=titles, suptitle=suptitle, mean=self.mean,
                              std=self.std, alpha=self.alpha)
            else:
                axes = ("time frame", "frequency bin") if result.get("kind") == "spectrogram" else None
                fig = partial(overlay_grid, image, shown[method], titles=titles, suptitle=suptitle, mean=self.mean,
                              std=self.std, alpha=self.alpha, axis_labels=axes)
            sink.figure(method, fig)  # drawn at commit, after the arrays and JSON below
            sink.array(f"gradcam_{method}", maps.numpy())
            sink.histogram(f"{method}/values", maps[finite].numpy())
            summary = self._localisation(method, maps, inputs, sink)
            if self._faith:
                faith = result["faithfulness"].get(method)
                summary["faithfulness"] = log_faithfulness(sink, method, faith, self._faith)
            sink.json(f"summary_{method}", {"layer": result["layer"], "reshape": result["reshape"],
                                            "flat": result["flat"][method], "dataset_index": probe.indices,
                                            "titles": titles, **summary})
            sink.commit(method=method, layer=result["layer"], reshape=result["reshape"])

    def _localisation(self, method: str, maps: Tensor, inputs: ModelInputs, sink: ArtifactSink) -> dict[str, Any]:
        if inputs.mask is None:
            return {}
        mask = inputs.mask.float()
        if mask.dim() == maps.dim() + 1 and mask.shape[1] == 1:
            mask = mask[:, 0]
        clean = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
        tol = self.pointing_tolerance
        tol = zhang_tolerance(*maps.shape[-2:]) if tol is None else tol
        hits = pointing_game(clean, mask, tolerance=tol).float()
        energy = energy_in_mask(clean, mask)
        sink.scalar(f"{method}/pointing_game", float(hits.mean()))
        sink.scalar(f"{method}/energy_in_mask", float(energy.mean()))
        return {"pointing_game": hits.tolist(), "pointing_tolerance": tol, "energy_in_mask": energy.tolist()}
