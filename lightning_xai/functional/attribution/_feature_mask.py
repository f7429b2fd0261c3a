"""The ``feature_mask`` argument of feature ablation, LIME and Kernel SHAP (captum's name and meaning: an integer
tensor broadcastable to the input, equal ids forming one feature), checked and shaped for the explained tensors."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.functional.attribution._prepare import Prepared

__all__ = ["check_feature_mask", "resolve_feature_masks"]

FeatureMask = Tensor | tuple[Tensor | None, ...] | list[Tensor | None] | dict[int, Tensor] | None


def check_feature_mask(mask: Any, name: str = "feature_mask") -> Tensor:
    """``mask`` as an integer tensor (a nested list of ints too), or a ``TypeError`` naming ``name``.

    Example:
        >>> check_feature_mask([[0, 0, 1]]).tolist()
        [[0, 0, 1]]
        >>> check_feature_mask(torch.rand(3))
        Traceback (most recent call last):
        ...
        TypeError: Expected argument `feature_mask` to be an integer tensor (equal ids form one feature), but got 'a torch.float32 tensor'.
    """
    if isinstance(mask, (list, tuple)):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(expected(name, "an integer tensor or nested list of integers", mask)) from err
    if not isinstance(mask, Tensor):
        raise TypeError(expected(name, "an integer tensor (equal ids form one feature)", type(mask).__name__))
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise TypeError(expected(name, "an integer tensor (equal ids form one feature)", f"a {mask.dtype} tensor"))
    return mask


def resolve_feature_masks(spec: FeatureMask, prep: Prepared, inputs: tuple[Any, ...]) -> tuple[Tensor | None, ...]:
    """One mask per explained tensor (``None``: its default features), shaped ``(1 or B, ...)`` like the explained
    tensor so that it broadcasts to it (a token input's mask, given over its ids ``(B, L)``, gets a trailing 1 for
    the embedding dim). ``spec``: a tensor (one explained input), a tuple/list of them (``None`` entries), one per
    explained input, or a dict by input position; each broadcastable to its input (leading dims may be missing).

    Example:
        >>> from lightning_xai.functional.attribution._prepare import prepare
        >>> x = torch.rand(2, 4)
        >>> prep = prepare(torch.nn.Linear(4, 1), (x,), None, None, None, False)
        >>> resolve_feature_masks(torch.tensor([0, 0, 1, 1]), prep, (x,))[0].shape
        torch.Size([1, 4])
    """
    slots = prep.slots
    if spec is None:
        return (None,) * len(slots)
    if isinstance(spec, dict):
        unknown = [k for k in spec if k not in slots]
        if unknown:
            raise ValueError(expected("feature_mask", f"a dict keyed by explained input positions {list(slots)}",
                                      unknown))
        spec = tuple(spec.get(s) for s in slots)
    elif isinstance(spec, Tensor):
        if len(slots) != 1:
            raise ValueError(expected("feature_mask", f"a tuple of one mask (or None) per explained input "
                                      f"({len(slots)}, at input positions {list(slots)}) or a dict by position",
                                      f"one tensor of shape {tuple(spec.shape)}"))
        spec = (spec,)
    elif not isinstance(spec, (tuple, list)) or len(spec) != len(slots):
        raise ValueError(expected("feature_mask", f"a tensor, or one mask (or None) per explained input "
                                  f"({len(slots)}) in a tuple, or a dict by input position", spec))
    out: list[Tensor | None] = []
    for j, (m, e, s) in enumerate(zip(spec, prep.explained, slots)):
        if m is None:
            out.append(None)
            continue
        label = "feature_mask" if len(slots) == 1 else f"feature_mask[{j}]"
        m = check_feature_mask(m, label)
        token = s == prep.token
        shape = tuple(inputs[s].shape) if token else tuple(e.shape)  # token masks are over the ids (B, L)
        if m.dim() > len(shape) or any(a not in (1, b) for a, b in zip(reversed(m.shape), reversed(shape))):
            what = "the token ids" if token else "the input"
            raise ValueError(expected(label, f"an integer tensor broadcastable to {what} {shape} (each dim 1 or "
                                      "equal)", f"shape {tuple(m.shape)}"))
        m = m.reshape(*[1] * (len(shape) - m.dim()), *m.shape).long().to(e.device)
        out.append(m.unsqueeze(-1) if token else m)
    return tuple(out)
