"""One check for the ``target`` argument of every attribution function: class indices, a callable, or ``None``;
and one check of class indices against the number of classes a model outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_xai._checks import expected

__all__ = ["check_class_bounds", "check_class_target"]


def check_class_target(
    target: Any, batch: int, *, allow_callable: bool = True, allow_none: bool = False
) -> Tensor | Callable[[Any], Tensor] | None:
    """``(batch,)`` int64 class indices from an int or an integer tensor (0-d or ``(batch,)``); a callable (the
    score of each row, e.g. a regression output) and ``None`` (the predicted class) pass through where allowed.

    Example:
        >>> check_class_target(2, 3)
        tensor([2, 2, 2])
        >>> check_class_target(torch.tensor([1, 0], dtype=torch.int32), 2)
        tensor([1, 0])
    """
    allowed = " or ".join(
        ["class indices (an int or an integer tensor of shape (B,))"]
        + (["a callable returning (B,) scores"] if allow_callable else [])
        + (["None (the predicted class)"] if allow_none else [])
    )
    if target is None and allow_none:
        return None
    if isinstance(target, bool):
        raise TypeError(expected("target", allowed, target))
    if isinstance(target, int):
        if target < 0:
            raise ValueError(expected("target", "class indices of at least 0", target))
        return torch.full((batch,), target, dtype=torch.long)
    if isinstance(target, Tensor):
        if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
            raise TypeError(expected("target", "an integer tensor of class indices", target.dtype))
        target = target.detach()
        if target.ndim == 0:
            target = target.reshape(1).expand(batch)
        if tuple(target.shape) != (batch,):
            raise ValueError(expected("target", f"class indices of shape ({batch},)", tuple(target.shape)))
        if bool((target < 0).any()):
            raise ValueError(expected("target", "class indices of at least 0", target.tolist()))
        return target.long()
    if allow_callable and callable(target):
        return target
    raise TypeError(expected("target", allowed, target))


def check_class_bounds(
    target: Tensor, classes: int, *, name: str = "`target`", kind: str = "class index", where: str = "position"
) -> Tensor:
    """Return ``target`` if every class index lies in ``[0, classes)``, else raise naming the first one outside.

    Args:
        target: ``(B,)`` class indices.
        classes: How many classes the model outputs.
        name: The argument as the message names it, e.g. ``"`target` ('label')"``.
        kind: What one index is called in the message (``"class index"``, ``"label"``).
        where: What the positions of ``target`` are (``"position"``, ``"probe position"``).

    Raises:
        ValueError: If an index is negative or not below ``classes``.

    Example:
        >>> check_class_bounds(torch.tensor([0, 2]), 3)
        tensor([0, 2])
        >>> check_class_bounds(torch.tensor([0, 1, 5]), 3, kind="label")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `target` to be labels in [0, 3) ..., but got label 5 at position 2.
    """
    bad = ((target < 0) | (target >= classes)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        more = f" ({bad.numel()} indices outside in all)" if bad.numel() > 1 else ""
        plural = "labels" if kind == "label" else "class indices"
        raise ValueError(
            f"Expected argument {name} to be {plural} in [0, {classes}) (the model outputs {classes} classes), "
            f"but got {kind} {int(target[i])} at {where} {i}{more}."
        )
    return target
