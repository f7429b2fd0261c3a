"""Class activation maps: the gradient family in pure torch, every other method through pytorch_grad_cam.

The gradient family (:data:`GRADIENT_CAM_METHODS`) shares one template, :func:`grad_cam`: a forward hook
captures the target layer's output (autograd records only from there on), ``torch.autograd.grad`` takes the
target scores' gradient with respect to that output only (never ``.backward()``, parameter ``.grad`` is never
written, frozen parameters are fine), one small function per method turns activations and gradients into a
map, and the map is resized to the input and normalised exactly as pytorch_grad_cam 1.5.7 does.
:func:`reference_cam` runs pytorch_grad_cam itself (the reference for the tests, and the engine for the
perturbation/eigen methods in :data:`REFERENCE_CAM_METHODS`) inside a guard that restores the model.
:func:`cam` dispatches between the two.

pytorch_grad_cam (with OpenCV, scikit-learn and matplotlib behind it) is imported only when
:func:`reference_cam` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._checks import check_choice, expected
from lightning_xai.functional._guard import explanation_mode

__all__ = [
    "CAM_METHODS",
    "GRADIENT_CAM_METHODS",
    "REFERENCE_CAM_METHODS",
    "cam",
    "grad_cam",
]

GRADIENT_CAM_METHODS: tuple[str, ...] = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "gradcamelementwise",
)

# Every other pytorch_grad_cam 1.5.7 method that explains a classifier from one target layer.
# Left out on purpose:
#   FinerCAM   - its point is a target built from the predicted class and its nearest classes; with an
#                explicit class target it is exactly its base GradCAM (so "gradcam" already covers it).
#   RefineCAM  - a product over several target layers; with one layer it is GradCAM++ (and it is not a
#                context manager, so its hooks could not be released reliably).
#   DeepFeatureFactorization, GuidedBackpropReLUModel - not class activation maps of a target.
# Notes: "fullgrad" ignores `target_layer` (it uses every Conv2d/BatchNorm2d bias); "shapleycam" needs a
# twice-differentiable graph and, in 1.5.7, CNN feature maps (it does not reshape token activations);
# "randomcam" draws from numpy's RNG, which the guard restores, so repeated calls give the same map.
REFERENCE_CAM_METHODS: dict[str, str] = {
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "fullgrad": "FullGrad",
    "randomcam": "RandomCAM",
    "kpcacam": "KPCA_CAM",
    "shapleycam": "ShapleyCAM",
    "fem": "FEM",
    "segeigencam": "SegEigenCAM",
    "sess": "SESS",
}

CAM_METHODS: tuple[str, ...] = GRADIENT_CAM_METHODS + tuple(REFERENCE_CAM_METHODS)

# pytorch_grad_cam classes of our gradient family, used by `reference_cam` (the tests' reference).
_GRADIENT_REFERENCE_CLASSES: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "gradcamelementwise": "GradCAMElementWise",
}
# Methods that call the model on batches of perturbed copies of one sample: run per sample for multi-input
# models, so that the fixed inputs can be expanded to the perturbed batch.
_PER_SAMPLE_METHODS = ("scorecam", "ablationcam", "sess")
# Methods whose pytorch_grad_cam 1.5.7 code cannot apply a reshape_transform (token models): FullGrad reads
# raw Conv2d/BatchNorm2d gradients, ShapleyCAM reshapes its weights but not the activations it multiplies.
_NO_RESHAPE_METHODS = ("fullgrad", "shapleycam")
# Methods that draw tqdm progress bars on stderr.
_NOISY_METHODS = ("scorecam", "ablationcam")

_EPS = 1e-7  # pytorch_grad_cam's `scale_cam_image` epsilon

_Target = Tensor | int | Callable[[Any], Tensor]


# ------------------------------------------------------------------------- one small function per method
def _spatial(activations: Tensor) -> tuple[int, ...]:
    return tuple(range(2, activations.ndim))


def _gradcam_weights(activations: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM: channel weights are the spatially averaged gradients."""
    return grads.mean(dim=_spatial(grads))


def _gradcam_plusplus_weights(activations: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM++ (eq. 19 of arXiv:1710.11063): positive gradients weighted by the alpha coefficients."""
    axes = _spatial(activations)
    grads_2 = grads * grads
    sum_activations = activations.sum(dim=axes, keepdim=True)
    alpha = grads_2 / (2 * grads_2 + sum_activations * grads_2 * grads + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (grads.clamp_min(0) * alpha).sum(dim=axes)


def _xgradcam_weights(activations: Tensor, grads: Tensor) -> Tensor:
    """XGrad-CAM: gradients weighted by the activations' share of their channel sum."""
    axes = _spatial(activations)
    return (grads * activations / (activations.sum(dim=axes, keepdim=True) + _EPS)).sum(dim=axes)


def _layercam_map(activations: Tensor, grads: Tensor) -> Tensor:
    """LayerCAM: positive gradients as element-wise weights."""
    return (grads.clamp_min(0) * activations).sum(dim=1)


def _hirescam_map(activations: Tensor, grads: Tensor) -> Tensor:
    """HiResCAM: raw gradients as element-wise weights."""
    return (grads * activations).sum(dim=1)


def _gradcam_elementwise_map(activations: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM element-wise: the positive part of each gradient-activation product."""
    return (grads * activations).clamp_min(0).sum(dim=1)


def _channel_weighted(weights_fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Turn a channel-weights function into a map function: the weighted sum of the activation channels."""

    def cam_map(activations: Tensor, grads: Tensor) -> Tensor:
        weights = weights_fn(activations, grads)
        return (weights.reshape(*weights.shape, *([1] * (activations.ndim - 2))) * activations).sum(dim=1)

    return cam_map


_CAM_MAPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gradcam": _channel_weighted(_gradcam_weights),
    "gradcam++": _channel_weighted(_gradcam_plusplus_weights),
    "xgradcam": _channel_weighted(_xgradcam_weights),
    "layercam": _layercam_map,
    "hirescam": _hirescam_map,
    "gradcamelementwise": _gradcam_elementwise_map,
}


# ------------------------------------------------------------------------------------- argument checks
def _check_inputs(inputs: Any, input_index: Any) -> tuple[tuple[Any, ...], Tensor]:
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if not inputs or not any(isinstance(x, Tensor) for x in inputs):
        raise TypeError(expected("inputs", "a tensor or a tuple of tensors (batch first)", inputs))
    valid_index = isinstance(input_index, int) and not isinstance(input_index, bool)
    if not valid_index or not -len(inputs) <= input_index < len(inputs):
        raise ValueError(expected("input_index", f"an index into the {len(inputs)} inputs", input_index))
    image = inputs[input_index]
    if not isinstance(image, Tensor) or image.ndim not in (4, 5):
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(
            expected(
                f"inputs[{input_index}]",
                "an image batch (B, C, H, W) or a video batch (B, C, T, H, W) / (B, T, C, H, W)",
                got,
            )
        )
    return inputs, image


def _check_target(target: Any, batch: int) -> Tensor | Callable[[Any], Tensor]:
    allowed = "class indices (a LongTensor of shape (B,)) or a callable"
    if isinstance(target, bool):
        raise TypeError(expected("target", allowed, target))
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long)
    if isinstance(target, Tensor):
        if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
            raise TypeError(expected("target", "an integer tensor of class indices", target.dtype))
        if target.ndim == 0:
            return target.reshape(1).expand(batch)
        if tuple(target.shape) != (batch,):
            raise ValueError(expected("target", f"class indices of shape ({batch},)", tuple(target.shape)))
        return target
    if callable(target):
        return target
    raise TypeError(expected("target", allowed, target))


def _check_layer(target_layer: Any) -> nn.Module:
    if not isinstance(target_layer, nn.Module):
        allowed = "an nn.Module (resolve names with `resolve_layer`)"
        raise TypeError(expected("target_layer", allowed, type(target_layer).__name__))
    return target_layer


def _no_inference_tensors(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Clone tensors created under ``torch.inference_mode``: autograd cannot record them."""
    return tuple(x.clone() if isinstance(x, Tensor) and x.is_inference() else x for x in inputs)


# ------------------------------------------------------------------------------------- template steps
def _scores(output: Any, target: Tensor | Callable[[Any], Tensor], batch: int) -> Tensor:
    """The (B,) target scores of a model output."""
    if isinstance(target, Tensor):
        if not isinstance(output, Tensor) or output.ndim != 2:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            allowed = "a function returning (batch, classes) logits for class-index targets"
            raise TypeError(expected("forward_fn", allowed, got))
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
            got = type(output).__name__
            raise TypeError(expected("target_layer", "a module whose output is a Tensor", got))
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
    layer_name = type(target_layer).__name__
    if not captured:
        raise ValueError(expected("target_layer", "a module that runs during the forward pass", layer_name))
    scores = _scores(output, target, batch)
    (grads,) = torch.autograd.grad(scores.sum(), captured[0], allow_unused=True)
    if grads is None:
        allowed = "a module whose output the target scores depend on"
        raise ValueError(expected("target_layer", allowed, layer_name))
    return captured[0].detach(), grads


def _as_feature_map(activations: Tensor, image: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """Check the (reshaped) layer output and return it as (B, C, h, w) or (B, C, t, h, w) with the map size.

    A per-frame batch ``B*T`` of a ``(B, T, C, H, W)`` video is folded into ``(B, C, T, h, w)``.
    """
    batch = image.shape[0]
    if activations.ndim == 4 and activations.shape[0] == batch:
        return activations, tuple(image.shape[-2:])
    if activations.ndim == 5 and activations.shape[0] == batch and image.ndim == 5:
        return activations, tuple(image.shape[-3:])
    if activations.ndim == 4 and image.ndim == 5 and activations.shape[0] == batch * image.shape[1]:
        frames = image.shape[1]  # a 2-D backbone applied per frame of (B, T, C, H, W)
        folded = activations.reshape(batch, frames, *activations.shape[1:]).transpose(1, 2)
        return folded, (frames, *image.shape[-2:])
    raise ValueError(
        expected(
            "target_layer",
            f"a module whose (reshaped) output is a (B, C, h, w) or, for video inputs, (B, C, t, h, w) or "
            f"(B*T, C, h, w) feature map with B={batch} (pass `reshape_transform` for token outputs)",
            tuple(activations.shape),
        )
    )


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


# ------------------------------------------------------------------------------------------- grad_cam
def grad_cam(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: _Target,
    target_layer: nn.Module,
    *,
    method: str = "gradcam",
    forward_fn: Callable[..., Any] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    input_index: int = 0,
) -> Tensor:
    """Class activation maps of the gradient family, in pure torch.

    One forward pass with ``target_layer`` hooked (autograd records only from that layer's output on) and one
    ``torch.autograd.grad`` of the summed target scores to that output (never into the parameters), inside
    :func:`explanation_mode` (eval mode, grad on, out of inference mode; the model's flags, ``requires_grad``,
    ``.grad``, hooks and RNG are restored). The maps equal pytorch_grad_cam 1.5.7's: ReLU, per-sample
    min-max (``+1e-7``), bilinear resize to the input (``align_corners=False``, as ``cv2.resize``), min-max
    again.

    For 5-D feature maps ``(B, C, t, h, w)`` of a video model the map is ``(B, T, H, W)``, resized
    trilinearly (corners aligned) to the input's ``(T, H, W)``; pytorch_grad_cam zooms with a cubic spline
    there, so the two agree only approximately (correlation about 0.97 on small random models). A 2-D
    backbone applied per frame of a ``(B, T, C, H, W)`` input (its feature map has batch ``B*T``) is handled
    the same way: the frames are folded back into ``(B, C, T, h, w)`` and each video is normalised as a whole.

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors, batch first.
        target: Class indices (a ``(B,)`` integer tensor, or one ``int`` for all), scored as
            ``logits[arange(B), target]``; or a callable mapping the model output to ``(B,)`` scores.
        target_layer: The module whose output is explained (see ``resolve_layer`` / ``find_target_layer``).
            If it runs several times in one forward, its first call is used.
        method: One of :data:`GRADIENT_CAM_METHODS`.
        forward_fn: ``forward_fn(model, *inputs)`` returns the output the target scores; default
            ``model(*inputs)``.
        reshape_transform: Maps the layer's output to ``(B, C, h, w)`` (or ``(B, C, t, h, w)``), e.g.
            ``vit_reshape_transform`` for transformer tokens.
        input_index: Which of ``inputs`` is the image (or video) the maps are sized like.

    Returns:
        ``(B, H, W)`` float32 maps in ``[0, 1]`` at the size of ``inputs[input_index]`` (``(B, T, H, W)`` for
        video), on its device.

    Raises:
        ValueError: For an unknown ``method``, bad shapes, or a target layer that does not run or does not
            influence the scores.
        TypeError: For arguments of the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 2))
        >>> maps = grad_cam(net, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), net[1])
        >>> maps.shape, maps.dtype
        (torch.Size([2, 8, 8]), torch.float32)
    """
    method = check_choice("method", method, GRADIENT_CAM_METHODS)
    target_layer = _check_layer(target_layer)
    inputs, image = _check_inputs(inputs, input_index)
    target = _check_target(target, image.shape[0])
    with explanation_mode(model):
        inputs = _no_inference_tensors(inputs)
        activations, grads = _activations_and_grads(
            model, inputs, target, target_layer, forward_fn, image.shape[0]
        )
        if reshape_transform is not None:
            activations, grads = reshape_transform(activations), reshape_transform(grads)
        activations, size = _as_feature_map(activations.float(), image)
        grads, _ = _as_feature_map(grads.float(), image)
        maps = _CAM_MAPS[method](activations, grads)
        return _normalise(maps, size).to(image.device)


# ------------------------------------------------------------------------------------------------ cam
def cam(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: _Target,
    target_layer: nn.Module,
    *,
    method: str = "gradcam",
    forward_fn: Callable[..., Any] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    input_index: int = 0,
) -> Tensor:
    """Class activation maps by any method of :data:`CAM_METHODS`.

    The gradient family runs in pure torch (:func:`grad_cam`); every other method through pytorch_grad_cam
    (:func:`reference_cam`). Arguments and result are those of :func:`grad_cam`.

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors, batch first.
        target: Class indices (a ``(B,)`` integer tensor, or one ``int``), or a callable mapping the model
            output to ``(B,)`` scores.
        target_layer: The module whose output is explained.
        method: One of :data:`CAM_METHODS`.
        forward_fn: ``forward_fn(model, *inputs)`` returns the output the target scores.
        reshape_transform: Maps the layer's output to ``(B, C, h, w)``.
        input_index: Which of ``inputs`` the maps are sized like.

    Returns:
        ``(B, H, W)`` float32 maps in ``[0, 1]`` (``(B, T, H, W)`` for video) on the input's device.

    Raises:
        ValueError: If ``method`` is not one of :data:`CAM_METHODS`, or for bad shapes.
        TypeError: For arguments of the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 2))
        >>> cam(net, torch.randn(1, 3, 8, 8), torch.tensor([1]), net[1], method="layercam").shape
        torch.Size([1, 8, 8])
    """
    method = check_choice("method", method, CAM_METHODS)
    if method in GRADIENT_CAM_METHODS:
        engine = grad_cam
    else:
        from lightning_xai.functional._cam_reference import reference_cam as engine
    return engine(
        model,
        inputs,
        target,
        target_layer,
        method=method,
        forward_fn=forward_fn,
        reshape_transform=reshape_transform,
        input_index=input_index,
    )
