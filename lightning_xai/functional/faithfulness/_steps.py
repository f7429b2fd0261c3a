"""The steps of the deletion and insertion metrics (:mod:`lightning_xai.functional.faithfulness`): argument
checks, feature ranks, baselines and the batched evaluation of every perturbed row. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._outputs import logits_of
from lightning_xai.functional._targets import check_class_target

__all__: list[str] = []

BASELINES = ("zero", "mean", "blur")
SCORES = ("probability", "logit")
BLUR_TAPS, BLUR_SIGMA = 11, 5.0  # the blur of RISE's reference code: 11 taps, sigma 5 pixels
_RESIZE_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def check_inputs(inputs: Any) -> Tensor:
    """``inputs`` as given: a non-empty floating tensor ``(B, F)`` or ``(B, C, ...)``."""
    if not isinstance(inputs, Tensor):
        raise TypeError(expected("inputs", "a floating point tensor, batch first", type(inputs).__name__))
    if not inputs.is_floating_point():
        allowed = "a floating point tensor (token ids are not supported: perturb their embeddings)"
        raise TypeError(expected("inputs", allowed, inputs.dtype))
    if inputs.ndim < 2 or inputs.numel() == 0:
        allowed = "a non-empty tensor of shape (B, F) or (B, C, *spatial)"
        raise ValueError(expected("inputs", allowed, tuple(inputs.shape)))
    return inputs


def check_target(target: Any, batch: int) -> Tensor | None:
    """``None`` or ``(B,)`` int64 class indices (not yet checked against the number of classes)."""
    return cast("Tensor | None", check_class_target(target, batch, allow_callable=False, allow_none=True))


def feature_ranks(attributions: Any, x: Tensor) -> Tensor:
    """Rank of every feature by decreasing attribution (0 = most important; ties: the earlier position first),
    shaped like ``x`` or, for a map without channels, ``(B, 1, *spatial)`` (one rank per pixel)."""
    shape, spatial = tuple(x.shape), tuple(x.shape[2:])
    allowed = f"a real tensor of shape {shape} (like `inputs`)"
    if spatial:
        allowed += f", (B, *spatial), (B, 1, *spatial) or (B, {shape[1]}, *spatial) with B = {shape[0]}"
    if not isinstance(attributions, Tensor) or attributions.is_complex():
        got = attributions.dtype if isinstance(attributions, Tensor) else type(attributions).__name__
        raise TypeError(expected("attributions", allowed, got))
    att = attributions.detach().to(x.device, torch.float64 if x.dtype == torch.float64 else torch.float32)
    got = tuple(att.shape)
    if got != shape:
        if not spatial or att.ndim not in (x.ndim - 1, x.ndim) or got[0] != shape[0] or att.numel() == 0:
            raise ValueError(expected("attributions", allowed, got))
        att = att.unsqueeze(1) if att.ndim == x.ndim - 1 else att
        if att.shape[1] not in (1, shape[1]) or (tuple(att.shape[2:]) != spatial and len(spatial) > 3):
            raise ValueError(expected("attributions", allowed, got))
        if tuple(att.shape[2:]) != spatial:
            att = F.interpolate(att, size=spatial, mode=_RESIZE_MODES[len(spatial)], align_corners=False)
    bad = int((~torch.isfinite(att)).sum())
    if bad:
        raise ValueError(expected("attributions", "finite values", f"{bad} NaN or infinite values"))
    flat = att.flatten(1)
    order = flat.sort(dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=x.device).expand_as(order).contiguous())
    return ranks.to(torch.int32).view(att.shape) if flat.shape[1] < 2**31 else ranks.view(att.shape)


def gaussian_blur(x: Tensor, taps: int = BLUR_TAPS, sigma: float = BLUR_SIGMA) -> Tensor:
    """``x`` blurred along every axis after the channel axis by a normalised ``taps``-tap Gaussian, edges
    replicated (``scipy.ndimage.gaussian_filter(..., truncate=taps // 2 / sigma, mode="nearest")``)."""
    radius = taps // 2
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    out = x
    for dim in range(2, x.ndim):
        moved = out.movedim(dim, -1)
        rows = F.pad(moved.reshape(-1, 1, moved.shape[-1]), (radius, radius), mode="replicate")
        out = F.conv1d(rows, kernel).reshape(moved.shape).movedim(-1, dim)
    return out


def baseline_of(baseline: Any, x: Tensor) -> Tensor:
    """The baseline as a tensor that broadcasts to ``x`` (``x``'s device and dtype)."""
    allowed = f"one of {list(BASELINES)} or a tensor that broadcasts to the inputs' shape {tuple(x.shape)}"
    if isinstance(baseline, Tensor):
        try:
            fits = torch.broadcast_shapes(baseline.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits or baseline.is_complex():
            raise ValueError(expected("baseline", allowed, tuple(baseline.shape)))
        return baseline.detach().to(x.device, x.dtype).expand_as(x)
    if not isinstance(baseline, str):
        raise TypeError(expected("baseline", allowed, baseline))
    if baseline not in BASELINES:
        raise ValueError(expected("baseline", allowed, baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=tuple(range(min(2, x.ndim - 1), x.ndim)), keepdim=True).expand_as(x)
    if x.ndim < 3:
        allowed = "'zero', 'mean' or a tensor for inputs without spatial axes (B, F)"
        raise ValueError(expected("baseline", allowed, baseline))
    return gaussian_blur(x)


def perturbed_logits(
    model: nn.Module,
    forward_fn: Callable[..., Any] | None,
    x: Tensor,
    base: Tensor,
    ranks: Tensor,
    counts: Tensor,
    insert: bool,
    max_batch: int,
) -> Tensor:
    """``(B, steps + 1, classes)`` logits: row ``(b, k)`` is sample ``b`` with its ``counts[k]`` top-ranked
    features replaced by the baseline (deletion) or with only those kept (insertion); ``max_batch`` rows per
    forward, rows of several samples mixed."""
    n_steps, total = counts.shape[0], x.shape[0] * counts.shape[0]
    per_row = (-1,) + (1,) * (x.ndim - 1)
    chunks = []
    for start in range(0, total, max_batch):
        rows = torch.arange(start, min(start + max_batch, total), device=x.device)
        sample, step = rows // n_steps, rows % n_steps
        top = ranks[sample] < counts[step].view(per_row)
        points = (
            torch.where(top, x[sample], base[sample]) if insert else torch.where(top, base[sample], x[sample])
        )
        output = model(points) if forward_fn is None else forward_fn(model, points)
        logits = logits_of(output)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != rows.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(output).__name__
            allowed = (
                f"a function (or model) returning ({rows.shape[0]}, classes) logits for {rows.shape[0]} rows"
            )
            raise TypeError(expected("forward_fn", allowed, got))
        chunks.append(logits.detach())
    return torch.cat(chunks).view(x.shape[0], n_steps, -1)
