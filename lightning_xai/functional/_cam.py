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

The steps live in private modules, one job each: ``_cam_checks`` (argument checks), ``_cam_steps`` (capture,
scores, feature map, normalisation) and ``_cam_maps`` (one small function per method); this module holds the
method tables and the two engines, and re-exports the steps' names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor, nn

from lightning_xai._checks import check_choice
from lightning_xai.functional._cam_checks import (
    _check_inputs,
    _check_layer,
    _check_target,
    _no_inference_tensors,
    _Target,
)
from lightning_xai.functional._cam_maps import (  # noqa: F401  (re-exported: importable from here as before)
    _CAM_MAPS,
    _channel_weighted,
    _gradcam_elementwise_map,
    _gradcam_plusplus_weights,
    _gradcam_weights,
    _hirescam_map,
    _layercam_map,
    _spatial,
    _xgradcam_weights,
)
from lightning_xai.functional._cam_steps import (  # noqa: F401  (re-exported: importable from here as before)
    _EPS,
    _activations_and_grads,
    _as_feature_map,
    _min_max,
    _normalise,
    _scores,
)
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional._layers import layer_label

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
        label, reshaped = layer_label(model, target_layer), reshape_transform is not None
        activations, size = _as_feature_map(activations.float(), image, label, reshaped)
        grads, _ = _as_feature_map(grads.float(), image, label, reshaped)
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
