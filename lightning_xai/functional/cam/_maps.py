"""One small function per gradient-family method: activations and gradients in, a (B, h, w) or (B, t, h, w) map out.

Each Grad-CAM variant of :func:`~lightning_xai.functional.cam.grad_cam` differs only here: a channel-weights
function (turned into a map by :func:`_channel_weighted`) or an element-wise map function. :data:`_CAM_MAPS`
maps the method names of ``GRADIENT_CAM_METHODS`` to them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_xai.functional.cam._steps import _EPS

__all__: list[str] = []


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
