"""Spatial drift metrics (re-exported by :mod:`lightning_xai.functional.drift`): mass location and spread.

The last two dimensions of a map are the pixel grid (H, W); every dimension between the batch and the grid
(the frames of a clip) is measured frame by frame and averaged.
"""

from __future__ import annotations

import torch
from torch import Tensor

import lightning_xai.functional.drift._core as core

__all__ = ["center_of_mass_shift", "focus_radius", "focus_radius_change"]

MAP_LAYOUT = "(B, ..., H, W) with at least one spatial map per probe"


def spatial_mass(x: Tensor, keep: Tensor | None, dtype: torch.dtype) -> Tensor:
    """``|x|`` (0 outside ``keep``) as ``(B, F, H, W)``: dimensions between batch and (H, W) are frames."""
    mass = x.detach().to(dtype).abs()
    if keep is not None:
        mass = mass * keep.to(x.device)
    return mass.reshape(x.shape[0], -1, *x.shape[-2:])


def centre_of_mass(mass: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row and column of each frame's centre of mass ``(B, F)`` (the grid centre when a frame has no mass)."""
    height, width = mass.shape[-2:]
    rows = torch.arange(height, device=mass.device, dtype=mass.dtype)
    cols = torch.arange(width, device=mass.device, dtype=mass.dtype)
    by_row, by_col = mass.sum(dim=-1), mass.sum(dim=-2)
    total = by_row.sum(dim=-1)
    has_mass = total > 0
    safe = torch.where(has_mass, total, torch.ones_like(total))
    cy = torch.where(has_mass, (by_row * rows).sum(dim=-1) / safe, torch.full_like(total, (height - 1) / 2))
    cx = torch.where(has_mass, (by_col * cols).sum(dim=-1) / safe, torch.full_like(total, (width - 1) / 2))
    return cy, cx, total


def radius_step(mass: Tensor) -> Tensor:
    """RMS distance from the centre of mass per frame, mean over frames ``(B,)``; 0 for a massless frame."""
    height, width = mass.shape[-2:]
    cy, cx, total = centre_of_mass(mass)
    rows = torch.arange(height, device=mass.device, dtype=mass.dtype)
    cols = torch.arange(width, device=mass.device, dtype=mass.dtype)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    ey2 = (mass.sum(dim=-1) * rows.square()).sum(dim=-1) / safe
    ex2 = (mass.sum(dim=-2) * cols.square()).sum(dim=-1) / safe
    spread = (ey2 - cy.square() + ex2 - cx.square()).clamp(min=0)
    return torch.where(total > 0, spread.sqrt(), torch.zeros_like(spread)).mean(dim=1)


def com_shift_step(mass_a: Tensor, mass_b: Tensor) -> Tensor:
    ya, xa, _ = centre_of_mass(mass_a)
    yb, xb, _ = centre_of_mass(mass_b)
    return torch.hypot(ya - yb, xa - xb).mean(dim=1)


def center_of_mass_shift(a: Tensor, b: Tensor, keep: Tensor | None = None) -> Tensor:
    """Distance in pixels between the centres of mass of ``|a|`` and ``|b|``.

    The last two dimensions are the pixel grid (H, W). For clips ``(B, T, H, W)`` (and any dimensions between
    the batch and the grid) the distance is taken frame by frame and averaged over the frames, so a moving
    object is followed. A frame without mass has its centre at the middle of the grid.

    Args:
        a: Reference attributions ``(B, ..., H, W)``.
        b: Attributions to compare, same shape.
        keep: Optional bool mask shaped like ``a``: excluded pixels count as no mass.

    Returns:
        Float32 ``(B,)``, pixels, at least 0.

    Example:
        >>> import torch
        >>> a = torch.zeros(1, 8, 8); a[0, 2, 2] = 1.0
        >>> b = torch.zeros(1, 8, 8); b[0, 5, 6] = 1.0
        >>> center_of_mass_shift(a, b)
        tensor([5.])
    """
    core.check_pair(a, b, keep, min_ndim=3, layout=MAP_LAYOUT)
    dtype = core.accumulation_dtype(a.device)
    return core.as_output(com_shift_step(spatial_mass(a, keep, dtype), spatial_mass(b, keep, dtype)))


def focus_radius(a: Tensor, keep: Tensor | None = None) -> Tensor:
    """Spatial spread of each map: the ``|a|``-weighted RMS distance (pixels) from its centre of mass.

    ``sqrt(sum |a| * ((y - cy)^2 + (x - cx)^2) / sum |a|)`` over the last two dimensions; frames of a clip are
    measured one by one and averaged. A frame without mass has radius 0.

    Args:
        a: Attributions ``(B, ..., H, W)``.
        keep: Optional bool mask shaped like ``a``: excluded pixels count as no mass.

    Returns:
        Float32 ``(B,)``, pixels.

    Example:
        >>> import torch
        >>> a = torch.zeros(1, 8, 8); a[0, 4, 2] = a[0, 4, 6] = 1.0
        >>> focus_radius(a)
        tensor([2.])
    """
    core.check_pair(a, a, keep, min_ndim=3, layout=MAP_LAYOUT)
    return core.as_output(radius_step(spatial_mass(a, keep, core.accumulation_dtype(a.device))))


def focus_radius_change(a: Tensor, b: Tensor, keep: Tensor | None = None) -> Tensor:
    """``focus_radius(b) - focus_radius(a)``: positive when ``b`` is more spread out than the reference ``a``.

    Args:
        a: Reference attributions ``(B, ..., H, W)``.
        b: Attributions to compare, same shape.
        keep: Optional bool mask shaped like ``a``: excluded pixels count as no mass.

    Returns:
        Float32 ``(B,)``, pixels (signed).

    Example:
        >>> import torch
        >>> a = torch.zeros(1, 8, 8); a[0, 4, 3] = a[0, 4, 5] = 1.0
        >>> b = torch.zeros(1, 8, 8); b[0, 4, 1] = b[0, 4, 7] = 1.0
        >>> focus_radius_change(a, b)
        tensor([2.])
    """
    core.check_pair(a, b, keep, min_ndim=3, layout=MAP_LAYOUT)
    dtype = core.accumulation_dtype(a.device)
    radius_a = radius_step(spatial_mass(a, keep, dtype))
    return core.as_output(radius_step(spatial_mass(b, keep, dtype)) - radius_a)
