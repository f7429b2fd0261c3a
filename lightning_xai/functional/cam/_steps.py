"""The template steps of :func:`~lightning_xai.functional.cam.grad_cam`: capture, scores, feature map, normalise.

A forward hook captures the target layer's output (autograd records only from there on), ``torch.autograd.grad``
takes the target scores' gradient with respect to that output only, and the map is resized to the input and
normalised exactly as pytorch_grad_cam 1.5.7 does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._layers import layer_label
from lightning_xai.functional._layers_tokens import map_axes
from lightning_xai.functional._targets import check_class_bounds

__all__: list[str] = []

_EPS = 1e-7  # pytorch_grad_cam's `scale_cam_image` epsilon


# ------------------------------------------------------------------------------------- template steps
def _layer_error(layer: str, allowed: str, got: str) -> str:
    """The one error formula for ``target_layer``, naming the layer (see :func:`layer_label`)."""
    return f"Expected argument `target_layer` ({layer}) to be {allowed}, but {got}."


def _scores(output: Any, target: Tensor | Callable[[Any], Tensor], batch: int) -> Tensor:
    """The (B,) target scores of a model output."""
    if isinstance(target, Tensor):
        if not isinstance(output, Tensor) or output.ndim != 2:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            allowed = "a function returning (batch, classes) logits for class-index targets"
            raise TypeError(expected("forward_fn", allowed, got))
        check_class_bounds(target, output.shape[1])
        return output.gather(1, target.to(output.device).reshape(-1, 1)).squeeze(1)
    scores = target(output)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (batch,):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(expected("target", f"a callable returning a ({batch},) tensor of scores", got))
    return scores


def _activations_and_grads(
    model: nn.Module,
    inputs: tuple[Any, ...],
    target: Tensor | Callable[[Any], Tensor],
    target_layer: nn.Module,
    forward_fn: Callable[..., Any] | None,
    batch: int,
) -> tuple[Tensor, Tensor]:
    """One forward with the target layer hooked, then the scores' gradient to its output only.

    Autograd records nothing up to the target layer: the forward starts under ``torch.no_grad()`` and the hook
    switches recording on, making the layer's output a leaf that requires grad. The gradient with respect to
    that output does not depend on anything upstream, so this gives the same maps while saving the upstream
    graph's memory and time (and lets fused inference kernels, e.g. ``nn.MultiheadAttention``'s fast path,
    run there). It also makes ``requires_grad`` of the parameters irrelevant. If the layer did not run (a
    fused no-grad path skipped it), the forward is repeated with autograd on throughout.
    """
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> Tensor | None:
        if captured:  # a layer called several times: keep the first call, like pytorch_grad_cam
            return None
        if not isinstance(output, Tensor):
            got = f"its output is a {type(output).__name__}"
            raise TypeError(_layer_error(layer_label(model, target_layer), "a layer whose output is a tensor", got))
        torch.set_grad_enabled(True)  # record from here on; the enclosing no_grad() restores the mode on exit
        activation = output.detach().requires_grad_(True)
        captured.append(activation)
        # Downstream gets a clone, so in-place ops after the layer (inplace ReLU, `out += identity`) neither
        # fail on the leaf nor change the captured values.
        return activation.clone()

    handle = target_layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            output = model(*inputs) if forward_fn is None else forward_fn(model, *inputs)
        if not captured:
            # Some containers take fused no-grad paths that skip their submodules (nn.TransformerEncoder's
            # fast path): run again with autograd on from the start.
            output = model(*inputs) if forward_fn is None else forward_fn(model, *inputs)
    finally:
        handle.remove()
    if not captured:
        allowed, got = "a layer that runs during the forward pass", "it did not run"
        raise ValueError(_layer_error(layer_label(model, target_layer), allowed, got))
    scores = _scores(output, target, batch)
    (grads,) = torch.autograd.grad(scores.sum(), captured[0], allow_unused=True)
    if grads is None:
        allowed, got = "a layer whose output the target scores depend on", "the scores do not depend on it"
        raise ValueError(_layer_error(layer_label(model, target_layer), allowed, got))
    return captured[0].detach(), grads


def _as_feature_map(
    activations: Tensor, image: Tensor, layer: str = "the target layer", reshaped: bool = False
) -> tuple[Tensor, tuple[int, ...]]:
    """Check the (reshaped) layer output and return it as (B, C, h, w) or (B, C, t, h, w) with the map size.

    A per-frame batch ``B*T`` of a ``(B, T, C, H, W)`` video is folded into ``(B, C, T, h, w)``; a spectrogram
    ``(B, A, B')`` gets maps of its own ``(A, B')`` (the reshape puts the tokens in that order). ``layer``
    names the layer in the error (see :func:`~lightning_xai.functional._layers.layer_label`).
    """
    batch = image.shape[0]
    if activations.ndim == 4 and activations.shape[0] == batch:
        return activations, tuple(image.shape[-2:])
    if activations.ndim == 5 and activations.shape[0] == batch and image.ndim == 5:
        return activations, tuple(image.shape[a] for a in map_axes(tuple(image.shape)))  # (T, H, W), either layout
    frames = image.shape[map_axes(tuple(image.shape))[0]] if image.ndim == 5 else 0
    if activations.ndim == 4 and image.ndim == 5 and activations.shape[0] == batch * frames:
        # a 2-D backbone applied per frame: (B*T, C, h, w), frames major within each video
        folded = activations.reshape(batch, frames, *activations.shape[1:]).transpose(1, 2)
        return folded, (frames, *image.shape[-2:])
    allowed = (
        f"a layer whose {'reshaped ' if reshaped else ''}output is a feature map (B, C, h, w) or, for video "
        f"inputs, (B, C, t, h, w) or (B*T, C, h, w), with B={batch}"
        + ("" if reshaped else " (pass `reshape_transform` for token outputs)")
    )
    got = f"its {'reshaped ' if reshaped else ''}output is a tensor of shape {tuple(activations.shape)}"
    raise ValueError(_layer_error(layer, allowed, got))


def _min_max(maps: Tensor) -> Tensor:
    """Per-sample ``(x - min) / (max + 1e-7)``, as pytorch_grad_cam's ``scale_cam_image``."""
    shape = (-1,) + (1,) * (maps.ndim - 1)
    maps = maps - maps.flatten(1).min(dim=1).values.reshape(shape)
    return maps / (_EPS + maps.flatten(1).max(dim=1).values.reshape(shape))


def _normalise(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """ReLU, min-max, resize to the input, min-max again (pytorch_grad_cam's steps).

    Images: bilinear with ``align_corners=False`` and no antialiasing, which is what ``cv2.resize`` with
    ``INTER_LINEAR`` computes. Videos: trilinear with ``align_corners=True``, the linear counterpart of the
    cubic-spline ``scipy.ndimage.zoom`` pytorch_grad_cam uses (whose ``grid_mode=False`` aligns the corners).
    """
    maps = _min_max(maps.clamp_min(0))
    if tuple(maps.shape[1:]) != size:
        video = maps.ndim == 4
        maps = F.interpolate(
            maps.unsqueeze(1), size=size, mode="trilinear" if video else "bilinear", align_corners=video
        ).squeeze(1)
    return _min_max(maps.clamp_min(0))
