"""Grad-CAM family explainers: one per method of :data:`~lightning_xai.functional.CAM_METHODS`, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, expected
from lightning_xai._inputs import (
    Scorer,
    clip_layout,
    first_sample,
    image_key,
    input_kind,
    input_names,
    spectrogram_time_first,
)
from lightning_xai.adapters import ModelInputs, resolve_callable
from lightning_xai.explainers._base import Explainer, Explanation, Target, targets_of
from lightning_xai.functional._layers import find_target_layer, resolve_layer, suggest_layers
from lightning_xai.functional.cam import CAM_METHODS, cam

__all__ = ["CAMExplainer", "CAMExplanation", "flat_probes", "reshape_name"]


@dataclass(frozen=True, kw_only=True)
class CAMExplanation(Explanation):
    """A Grad-CAM family explanation: ``values[key]`` is the ``(B, H, W)`` (clips ``(B, T, H, W)``, spectrograms
    ``(B, F, T)`` like the input) heatmap of input ``key``.

    Attributes:
        key: the explained input's display name (the one key of ``values``).
        layer: the dotted name of the explained layer; ``reshape``: its reshape transform's name.
        flat: per probe, is the map constant (it shows nothing)?
        candidates: layers to suggest when every map is flat (else ``None``).
    """

    key: str
    layer: str
    reshape: str | None = None
    flat: list[bool]
    candidates: list[str] | None = None

    row_fields: ClassVar[tuple[str, ...]] = (*Explanation.row_fields, "flat")

    def drift_arrays(self) -> dict[str, Tensor]:
        """The map keyed by the method (``{"gradcam": ...}``), averaged over frames for clips."""
        return {self.method: self.maps()[self.key]}


def flat_probes(maps: Tensor) -> list[bool]:
    """Per probe: is the map constant (all zero included) or not finite anywhere? Such a map shows nothing.

    Example:
        >>> flat_probes(torch.stack([torch.ones(2, 2), torch.eye(2)]))
        [True, False]
    """
    v = maps.detach().float().flatten(1)
    return (~((v.amax(1) > v.amin(1)) & torch.isfinite(v).all(1))).tolist()


def reshape_name(reshape: Any) -> str | None:
    """A readable name of a reshape transform (``functools.partial`` shows its function and arguments).

    Example:
        >>> from lightning_xai.functional import vit_reshape_transform
        >>> reshape_name(vit_reshape_transform)
        'lightning_xai.functional._reshape.vit_reshape_transform'
    """
    if reshape is None:
        return None
    func = getattr(reshape, "func", reshape)
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', type(func).__name__)}".lstrip(".")
    keywords = getattr(reshape, "keywords", None)
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in keywords.items())})" if keywords else name


class CAMExplainer(Explainer):
    """Class activation maps of one Grad-CAM family ``method`` over an image, clip or spectrogram input.

    The gradient family (``gradcam``, ``gradcam++``, ``xgradcam``, ``layercam``, ``hirescam``,
    ``gradcamelementwise``) runs on a pure-torch path; the other pytorch_grad_cam methods through pytorch_grad_cam.

    Args:
        method: one of :data:`~lightning_xai.functional.CAM_METHODS`.
        target_layer: dotted name of the layer (``"layer4.1"``); ``None`` finds it by structure at the first
            explanation (kept in :attr:`layer` afterwards).
        reshape_transform: callable (or dotted path) mapping the layer's activation to ``(B, C, h, w)``.
        reshape_kwargs: keyword arguments of ``reshape_transform``.
        input_key: the explained input (position or keyword); default the first image/clip, else spectrogram.
        video_layout: ``"BTCHW"``, ``"BCTHW"`` or ``"auto"`` for 5-D inputs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(4, 2))
        >>> e = CAMExplainer("gradcam", target_layer="0").explain(net, ModelInputs((torch.rand(2, 3, 8, 8),)))
        >>> e.values["input"].shape, e.layer
        (torch.Size([2, 8, 8]), '0')
    """

    name = "gradcam"
    kinds = ("image", "video", "spectrogram")

    def __init__(
        self,
        method: str = "gradcam",
        target_layer: str | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | str | None = None,
        reshape_kwargs: dict[str, Any] | None = None,
        input_key: int | str | None = None,
        video_layout: Literal["auto", "BTCHW", "BCTHW"] = "auto",
    ) -> None:
        self.method = check_choice("method", method, CAM_METHODS)
        self.name = self.method  # type: ignore[misc]
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
        # one map per sample; "randomcam" draws from numpy's restored RNG: its maps depend on the batch
        self.splittable = self.method != "randomcam"
        #: the layer explained, ``(dotted name, reshape transform)``: given, or found at the first explanation
        self.layer: tuple[str, Callable[[Tensor], Tensor] | None] | None = (
            (target_layer, self.reshape_transform) if target_layer is not None else None)

    def settings(self) -> dict[str, Any]:
        name, reshape = self.layer if self.layer is not None else (self.target_layer, self.reshape_transform)
        return {"method": self.method, "layer": name, "reshape": reshape_name(reshape)}

    def find_layer(self, model: nn.Module, inputs: ModelInputs, scorer: Scorer | None = None,
                   target: Target = "pred") -> tuple[str, Callable[[Tensor], Tensor] | None]:
        """The layer to explain: :attr:`layer` once known, else found by structure on one sample of every input
        (an image+text model needs its text cut alike) and kept."""
        if self.layer is None:
            scorer = scorer or Scorer(owner=f"Grad-CAM ({self.method})")
            key = image_key(inputs, self.input_key)
            one = first_sample(inputs)
            scoring = callable(target) and not isinstance(target, Tensor)

            def fwd_one(m: nn.Module, image: Tensor) -> Tensor:
                out = scorer(m, one.replace(key, image))
                return out if scoring else scorer.logits(out)

            name, reshape = find_target_layer(model, (one.get(key),), forward_fn=fwd_one)  # by structure
            self.layer = (name, self.reshape_transform or reshape)
        return self.layer

    def explain(self, model: nn.Module, inputs: ModelInputs, target: Target = "pred",
                scorer: Scorer | None = None) -> CAMExplanation:
        scorer = scorer or Scorer(owner=f"Grad-CAM ({self.method})")
        key = image_key(inputs, self.input_key)
        x = inputs.get(key)
        scoring = callable(target) and not isinstance(target, Tensor)

        def fwd(m: nn.Module, image: Tensor) -> Tensor:
            out = scorer(m, inputs.replace(key, image))
            return out if scoring else scorer.logits(out)

        with torch.no_grad():
            logits = scorer.logits(scorer(model, inputs), scoring=scoring)
        classes = targets_of(logits, target, inputs)
        name, reshape = self.find_layer(model, inputs, scorer, target)
        maps = cam(model, (x,), classes, resolve_layer(model, name), method=self.method, forward_fn=fwd,
                   reshape_transform=reshape).float().cpu()
        flat = flat_probes(maps)
        names = input_names(inputs)
        slots = [*range(len(inputs.args)), *inputs.kwargs]
        all_inputs = {n: inputs.get(k).detach().cpu() for n, k in zip(names, slots)
                      if isinstance(inputs.get(k), Tensor)}
        shown = names[slots.index(key)]
        probs = logits.float().softmax(-1) if logits.dim() == 2 else None
        layout = clip_layout(x, self.video_layout, f"Grad-CAM ({self.method})")
        return CAMExplanation(
            method=self.method, values={shown: maps}, inputs=all_inputs,
            kinds={n: input_kind(n if n != shown else str(key), t) for n, t in all_inputs.items()}, signed=False,
            target=None if scoring else classes.cpu(),  # type: ignore[union-attr]
            prediction=logits.argmax(-1).cpu() if logits.dim() == 2 else None,
            confidence=probs.max(-1).values.cpu() if probs is not None else None,
            layouts={shown: layout} if layout else {},
            time_first=(shown,) if spectrogram_time_first(model, x) else (),
            settings={"method": self.method, "layer": name, "reshape": reshape_name(reshape)},
            key=shown, layer=name, reshape=reshape_name(reshape), flat=flat,
            candidates=suggest_layers(model) if flat and all(flat) else None,
        )
