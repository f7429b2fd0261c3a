"""Localisation metrics: does an explanation point at the object that decides the class?

Pure torch. Both metrics compare saliency maps ``(B, H, W)`` (images) or ``(B, T, H, W)`` (clips) with
ground-truth masks of the same layout, such as those of :class:`lightning_xai.datasets.SyntheticShapes`.

* :func:`pointing_game` (Zhang et al., "Top-down Neural Attention by Excitation Backprop", IJCV 2018): a hit
  when the map's maximum lies on the object, optionally within a tolerance.
* :func:`energy_in_mask` (Wang et al., "Score-CAM", CVPR-W 2020, "energy-based pointing game"): the share of
  the map's mass that lies on the object.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai._checks import expected

__all__ = [
    "zhang_tolerance","pointing_game", "energy_in_mask"]


def _check_maps_and_masks(cams: Any, masks: Any) -> None:
    """Shared argument checks: tensors, ``(B, H, W)`` or ``(B, T, H, W)``, matching leading dimensions."""
    if not isinstance(cams, Tensor):
        raise TypeError(expected("cams", "a torch.Tensor", type(cams).__name__))
    if not isinstance(masks, Tensor):
        raise TypeError(expected("masks", "a torch.Tensor", type(masks).__name__))
    if cams.ndim not in (3, 4):
        raise ValueError(expected("cams", "a tensor of shape (B, H, W) or (B, T, H, W)", tuple(cams.shape)))
    if cams.is_complex():
        raise TypeError(expected("cams", "a real-valued tensor", cams.dtype))
    if cams.numel() == 0:
        raise ValueError(expected("cams", "a non-empty tensor", tuple(cams.shape)))
    lead = tuple(cams.shape[:-2])
    layout = "(B, H', W')" if cams.ndim == 3 else "(B, T, H', W')"
    if masks.ndim != cams.ndim or tuple(masks.shape[:-2]) != lead or masks.numel() == 0:
        raise ValueError(
            expected("masks", f"a tensor of shape {layout} with leading dimensions {lead} like `cams`",
                     tuple(masks.shape))
        )


def _binary_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Masks as bool, resized (nearest) to ``size`` if needed. Floats count as inside when > 0.5."""
    if masks.dtype == torch.bool:
        inside = masks
    elif masks.is_floating_point():
        inside = masks > 0.5
    else:
        inside = masks != 0
    if tuple(inside.shape[-2:]) != size:
        flat = inside.reshape(-1, 1, *inside.shape[-2:]).to(torch.uint8)
        flat = F.interpolate(flat, size=size, mode="nearest")
        inside = flat.reshape(*inside.shape[:-2], *size).bool()
    return inside


def _finite_maps(cams: Tensor) -> Tensor:
    """Floating point copy of the maps in which NaN and +/-inf count as no evidence (``-inf``)."""
    cams = cams.float() if not cams.is_floating_point() else cams
    return torch.where(torch.isfinite(cams), cams, torch.full_like(cams, -torch.inf))


def zhang_tolerance(height: int, width: int) -> int:
    """The pointing-game tolerance of Zhang et al. (2018), 15 pixels at 224², scaled to a ``height × width`` map.

    Example:
        >>> zhang_tolerance(224, 224), zhang_tolerance(32, 32)
        (15, 2)
    """
    return int(round(15 * min(height, width) / 224))


def pointing_game(cams: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Pointing game: is each map's maximum on the object?

    A sample is a *hit* when the location of its map's maximum lies inside the mask, or, with ``tolerance``
    ``> 0``, within ``tolerance`` pixels (Euclidean distance, in the same frame) of a mask pixel, which is
    the same as dilating the mask by a disc of that radius. Zhang et al. (2018) use a tolerance of 15 pixels
    on 224-pixel images; the default of 0 asks for the maximum itself to lie on the object, which suits
    small images such as :class:`~lightning_xai.datasets.SyntheticShapes`.

    For clips ``(B, T, H, W)`` the maximum is taken over the whole clip and compared with the mask of its
    own frame. Ties resolve to the first maximum in row-major order; a map with no peak (constant, or no
    finite value) is a miss. Non-finite values are ignored.

    Args:
        cams: Saliency maps, ``(B, H, W)`` or ``(B, T, H, W)``.
        masks: Object masks with the same leading dimensions, ``(B, H', W')`` or ``(B, T, H', W')``; bool,
            integer (non-zero is inside) or float (``> 0.5`` is inside). Resized with nearest-neighbour
            interpolation when ``(H', W')`` differs from ``(H, W)``.
        tolerance: Radius in pixels (of the maps' grid) by which the masks are dilated.

    Returns:
        Bool tensor ``(B,)``, True for a hit.

    Raises:
        TypeError: If ``cams`` or ``masks`` is not a tensor.
        ValueError: If the shapes do not match the layouts above, or ``tolerance`` is negative.

    Example:
        >>> cams = torch.zeros(2, 4, 4)
        >>> cams[0, 1, 1] = 1.0  # peak inside the mask
        >>> cams[1, 3, 3] = 1.0  # peak outside
        >>> masks = torch.zeros(2, 4, 4)
        >>> masks[:, :2, :2] = 1.0
        >>> pointing_game(cams, masks)
        tensor([ True, False])
        >>> pointing_game(cams, masks, tolerance=3)
        tensor([True, True])
    """
    _check_maps_and_masks(cams, masks)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(expected("tolerance", "an integer of at least 0 (pixels)", tolerance))
    height, width = cams.shape[-2:]
    inside = _binary_masks(masks.to(cams.device), (height, width))
    batch = cams.shape[0]
    flat = _finite_maps(cams.detach()).reshape(batch, -1)
    peak_value, peak = flat.max(dim=1)
    lowest = torch.where(torch.isfinite(flat), flat, torch.full_like(flat, torch.inf)).min(dim=1).values
    has_peak = torch.isfinite(peak_value) & (peak_value > lowest)
    frame, pixel = peak // (height * width), peak % (height * width)
    inside = inside.reshape(batch, -1, height, width)[torch.arange(batch, device=cams.device), frame]
    if tolerance == 0:
        hit = inside.reshape(batch, -1).gather(1, pixel[:, None]).squeeze(1)
    else:
        rows = torch.arange(height, device=cams.device).view(1, height, 1)
        cols = torch.arange(width, device=cams.device).view(1, 1, width)
        py, px = (pixel // width).view(batch, 1, 1), (pixel % width).view(batch, 1, 1)
        near = (rows - py).square() + (cols - px).square() <= tolerance * tolerance
        hit = (near & inside).flatten(1).any(dim=1)
    return hit & has_peak


def energy_in_mask(cams: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game: the share of each map's mass that lies inside the mask.

    ``sum(cam * mask) / sum(cam)`` per sample, over the whole map (all frames of a clip). The maps are
    taken as non-negative: negative values are clipped to 0, and NaN and +/-inf count as 0. A map with no
    mass left gives 0, never NaN. The result lies in [0, 1]: 1 when all the mass is on the object, and the
    object's area fraction on average for a uniform map.

    Args:
        cams: Saliency maps, ``(B, H, W)`` or ``(B, T, H, W)``.
        masks: Object masks with the same leading dimensions, ``(B, H', W')`` or ``(B, T, H', W')``; bool,
            integer (non-zero is inside) or float (``> 0.5`` is inside). Resized with nearest-neighbour
            interpolation when ``(H', W')`` differs from ``(H, W)``.

    Returns:
        Float tensor ``(B,)`` in [0, 1] (``float32`` for integer maps, else the maps' dtype).

    Raises:
        TypeError: If ``cams`` or ``masks`` is not a tensor.
        ValueError: If the shapes do not match the layouts above.

    Example:
        >>> cams = torch.tensor([[[1.0, 1.0], [0.0, 0.0]],  # all inside
        ...                      [[1.0, 1.0], [1.0, 1.0]],  # half inside
        ...                      [[0.0, 0.0], [0.0, 0.0]]])  # no mass
        >>> masks = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).expand(3, 2, 2)
        >>> energy_in_mask(cams, masks)
        tensor([1.0000, 0.5000, 0.0000])
    """
    _check_maps_and_masks(cams, masks)
    maps = cams.float() if not cams.is_floating_point() else cams
    maps = torch.where(torch.isfinite(maps), maps, torch.zeros_like(maps)).clamp(min=0)
    inside = _binary_masks(masks.to(maps.device), tuple(maps.shape[-2:]))
    batch = maps.shape[0]
    total = maps.reshape(batch, -1).sum(dim=1)
    on_object = (maps * inside).reshape(batch, -1).sum(dim=1)
    share = on_object / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, share, torch.zeros_like(share)).clamp(0.0, 1.0)
