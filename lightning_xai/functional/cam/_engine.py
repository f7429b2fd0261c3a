"""The two entry points of the CAM engines: :func:`grad_cam` (the gradient family in pure torch) and :func:`cam`.

:func:`cam` runs the gradient family through :func:`grad_cam` and every other method through
:func:`~lightning_xai.functional.cam.reference_cam` (see :mod:`lightning_xai.functional.cam`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor, nn

from lightning_xai._checks import check_choice
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional._layers import layer_label
from lightning_xai.functional.cam._checks import (
    _check_inputs,
    _check_layer,
    _check_target,
    _no_inference_tensors,
    _Target,
)
from lightning_xai.functional.cam._maps import _CAM_MAPS
from lightning_xai.functional.cam._methods import CAM_METHODS, GRADIENT_CAM_METHODS
from lightning_xai.functional.cam._reference import reference_cam
from lightning_xai.functional.cam._steps import _activations_and_grads, _as_feature_map, _normalise

__all__ = ["cam", "grad_cam"]


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
    engine = grad_cam if method in GRADIENT_CAM_METHODS else reference_cam
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
