"""Calibration formatting: one checked batch of predictions reduced to what the bins need.

Pure torch. :func:`_calibration_format` turns a batch checked by
:mod:`~lightning_xai.functional.calibration._input_checks` into per-prediction confidences, outcomes, Brier
scores and NLLs with the very ops torchmetrics uses, so that the bins agree bit for bit: probabilities or
logits (declared or detected), the top label, the NLL, the multiclass and the binary/multilabel format.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

import lightning_xai.functional.calibration._common as common
from lightning_xai.functional.calibration._input_checks import ROW_SUM_TOL, finite_rows, input_mismatch

__all__: list[str] = []

_LOG_TINY = {dtype: math.log(torch.finfo(dtype).tiny) for dtype in (torch.float16, torch.bfloat16, torch.float32,
                                                                     torch.float64)}
_BASES: dict[tuple[int, int, torch.device], Tensor] = {}  # row starts of a flattened (N, C), for a few shapes
_LOG_FLOOR = -100.0  # F.binary_cross_entropy's clamp of log(p)


class _Batch(NamedTuple):
    """One batch reduced to what the bins need (output of :func:`_calibration_format`)."""

    confidence: Tensor  # (M,) float, the dtype torchmetrics bins in
    correct: Tensor  # (M,) same dtype, 0/1
    weight: Tensor | None  # (M,) bool, False for predictions of non-finite rows; None if every row is finite
    brier: Tensor  # (M,)
    nll: Tensor  # (M,)
    nonfinite: Tensor | int  # rows left out
    class_prob: Tensor | None  # (N, C) one-vs-rest probabilities
    class_correct: Tensor | None  # (N, C) 0/1
    row_weight: Tensor | None  # (N,) bool, or None when every row is finite
    rows: int
    mismatch: str | None = None  # how the data contradict the declared `input` (see input_mismatch), or None


def _infer_task(preds: Tensor, target: Tensor, task: str = "auto") -> str:
    """``task`` unless ``"auto"``, else the task the shapes say: ``(N,)`` or ``(N, 1)`` binary, ``(N, L)`` with
    ``(N, L)`` targets multilabel, else multiclass."""
    if task != "auto":
        return task
    if preds.ndim == 1 or (preds.ndim == 2 and preds.shape[1] == 1):
        return "binary"
    return "multilabel" if target.shape == preds.shape else "multiclass"


def _select(is_probs: bool | Tensor, probs: Callable[[], Tensor], logits: Callable[[], Tensor]) -> Tensor:
    """``probs()`` or ``logits()``; with a tensor flag (``input="auto"`` off the CPU) both, then ``where``."""
    if isinstance(is_probs, bool):
        return probs() if is_probs else logits()
    return torch.where(is_probs, probs(), logits())


def _looks_like_probs(
    x: Tensor, task: str, finite: Tensor | None, branch: bool, bounds: tuple[float, float] | None = None
) -> bool | Tensor:
    """``input="auto"``: every finite value in [0, 1] and, for multiclass, every finite row summing to 1.

    ``bounds`` are the smallest and largest value of ``x`` when already known (every value finite).
    """
    if branch:
        kept = x if finite is None else x[finite]
        if kept.numel() == 0:
            return True
        low, high = bounds if bounds is not None else (float(kept.amin()), float(kept.amax()))
        if high > 1 or low < 0:
            return False
        return task != "multiclass" or bool(((kept.sum(dim=1) - 1).abs() <= ROW_SUM_TOL).all())
    ok = (x >= 0) & (x <= 1)
    if task == "multiclass":
        ok = ok.all(dim=1) & ((x.sum(dim=1) - 1).abs() <= ROW_SUM_TOL)
    elif task == "multilabel":
        ok = ok.all(dim=1)
    return ok.all() if finite is None else (ok | ~finite).all()


def _top_label(
    probs: Tensor, y: Tensor, flat: Tensor, p_y: Tensor, branch: bool, scratch: bool, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Top-label confidence and whether the top label is ``y`` (0/1 in ``dtype``), as ``max(dim=1)`` decides.

    On the CPU ``max(dim=1)`` is slow for returning indices. With ``m`` the largest probability of the other
    classes, the top label is ``y`` when ``p_y > m`` and is not when ``p_y < m``; only a tie ``p_y == m``
    needs the first-index rule of ``max(dim=1)``, which is then used for the batch. ``flat`` is the index of
    each ``p_y`` in ``probs.view(-1)``; with ``scratch`` the (contiguous) probabilities may be overwritten
    (and are restored before a tie rule).
    """
    if branch and probs.numel():
        masked = probs if scratch else probs.clone(memory_format=torch.contiguous_format)
        masked.view(-1).index_fill_(0, flat, -1.0)
        others = masked.amax(dim=1)
        if not bool((p_y == others).any()):
            return torch.maximum(p_y, others), torch.gt(p_y, others, out=p_y.new_empty(p_y.shape, dtype=dtype))
        if scratch:
            probs.view(-1).index_copy_(0, flat, p_y)
    top, predicted = probs.max(dim=1)
    return top, (predicted == y).to(dtype)


def _flat_index(y: Tensor, classes: int) -> Tensor:
    """Index of ``p[i, y[i]]`` in ``p.view(-1)`` for a contiguous ``(N, classes)`` ``p``."""
    key = (y.shape[0], classes, y.device)
    base = _BASES.get(key)
    if base is None:
        if len(_BASES) >= 8:
            _BASES.clear()
        with torch.inference_mode(False):  # a normal tensor, usable in and out of inference mode
            base = _BASES[key] = torch.arange(0, y.shape[0] * classes, classes, device=y.device)
    return base + y


def _multiclass_nll(
    x: Tensor, y: Tensor, p_y: Tensor, is_probs: bool | Tensor, branch: bool, bounds: tuple[float, float] | None
) -> Tensor:
    """``-log p_y``; from logits ``logsumexp(x) - x_y`` where ``p_y`` underflows, so it is cross-entropy.

    No ``p_y`` can underflow when the logits span less than ``-log(tiny) - log(C)`` (``bounds``: smallest and
    largest logit): ``p_y >= exp(x_y - max x) / C``. Then the check is skipped.
    """
    if is_probs is True:
        return p_y.log().clamp_(min=_LOG_FLOOR).neg_()
    nll = p_y.log().neg_()
    log_tiny = _LOG_TINY[p_y.dtype] if p_y.dtype in _LOG_TINY else math.log(torch.finfo(p_y.dtype).tiny)
    if bounds is not None and bounds[1] - bounds[0] + math.log(x.shape[1]) + 1 < -log_tiny:
        return nll
    tiny = math.exp(log_tiny)
    if branch and (p_y.numel() == 0 or float(p_y.min()) >= tiny):
        return nll
    exact = torch.logsumexp(x, dim=1) - x.gather(1, y.unsqueeze(1)).squeeze(1)
    from_logits = torch.where(p_y < tiny, exact, nll)
    if is_probs is False:
        return from_logits
    return torch.where(is_probs, p_y.log().clamp_(min=_LOG_FLOOR).neg_(), from_logits)  # type: ignore[arg-type]


def _binary_nll(x: Tensor, y: Tensor, probs: Tensor, is_probs: bool | Tensor) -> Tensor:
    """Per-prediction binary cross-entropy: as ``F.binary_cross_entropy`` (log >= -100) or from logits."""

    def from_probs() -> Tensor:  # F.binary_cross_entropy's formula, without its range assertion
        return -(y * probs.log().clamp(min=_LOG_FLOOR) + (1 - y) * (-probs).log1p().clamp(min=_LOG_FLOOR))

    return _select(is_probs, from_probs, lambda: F.binary_cross_entropy_with_logits(x, y, reduction="none"))


def _multiclass_format(
    x: Tensor, target: Tensor, is_probs: bool | Tensor, branch: bool, bounds: tuple[float, float] | None,
    per_class: bool, finite: Tensor | None, nonfinite: Tensor | int,
) -> _Batch:
    """The multiclass part of :func:`_calibration_format` (``x``: preds with non-finite values zeroed)."""
    probs = x if is_probs is True else torch.softmax(x, dim=1) if is_probs is False else torch.where(
        is_probs, x, torch.softmax(x, dim=1))
    if not probs.is_contiguous():
        probs = probs.contiguous()
    y = target if target.dtype == torch.long else target.long()
    rows, classes = probs.shape
    flat = _flat_index(y, classes)
    p_y = probs.view(-1).index_select(0, flat)
    # sum_c (p_c - [y = c])**2, from the row's sum of squares
    brier = torch.linalg.vector_norm(probs, dim=1).square_().sub_(p_y, alpha=2).add_(1)
    scratch = is_probs is False and not per_class  # probs is ours (softmax) and not needed after this
    # torchmetrics bins the top-label confidence in float32
    top, correct = _top_label(probs, y, flat, p_y, branch, scratch, torch.float32)
    confidence = top if top.dtype == torch.float32 else top.float()
    nll = _multiclass_nll(x, y, p_y, is_probs, branch, bounds)
    class_correct = None
    if per_class:
        class_correct = (y.unsqueeze(1) == torch.arange(classes, device=probs.device)).to(probs.dtype)
    return _Batch(confidence, correct, finite, brier, nll, nonfinite, probs if per_class else None,
                  class_correct, finite, rows)


def _calibration_format(
    preds: Tensor, target: Tensor, task: str, input: str, per_class: bool = False, check_input: bool = False
) -> _Batch:
    """Probabilities, confidences, outcomes and per-prediction Brier/NLL for one checked batch.

    The probabilities come from the very ops torchmetrics uses (``torch.softmax(dim=1)`` / ``torch.sigmoid``)
    and the top label follows ``max(dim=1)`` (see :func:`_top_label`), with float32 top-label confidences,
    so the bins agree bit for bit. With ``check_input`` the batch's ``mismatch`` says how the data contradict a
    declared ``input`` (:func:`input_mismatch`, from the smallest and largest value already taken on the CPU).
    """
    preds = preds.detach()
    if target.device != preds.device:
        target = target.to(preds.device)
    branch = common._branch_on_values(preds)
    finite: Tensor | None = None
    nonfinite: Tensor | int = 0
    x = preds
    bounds = None
    if branch and preds.numel():  # on the CPU: smallest and largest value, NaN if any is NaN, in one pass
        low, high = torch.aminmax(preds)
        bounds = (float(low), float(high))
    if not (branch and (bounds is None or (math.isfinite(bounds[0]) and math.isfinite(bounds[1])))):
        finite = finite_rows(preds)
        x = torch.nan_to_num(preds, nan=0.0, posinf=0.0, neginf=0.0)
        nonfinite = (~finite).sum()
        bounds = None
    is_probs = input == "probs" if input != "auto" else _looks_like_probs(x, task, finite, branch, bounds)
    mismatch = input_mismatch(x, task, input, finite, bounds) if check_input else None
    if task == "multiclass":
        batch = _multiclass_format(x, target, is_probs, branch, bounds, per_class, finite, nonfinite)
        return batch if mismatch is None else batch._replace(mismatch=mismatch)
    probs = _select(is_probs, lambda: x, lambda: torch.sigmoid(x))
    y = target.to(probs.dtype)
    nll = _binary_nll(x, y, probs, is_probs)
    weight = None if finite is None else (finite if task == "binary" else finite[:, None].expand_as(probs))
    return _Batch(
        probs.flatten(), y.flatten(), None if weight is None else weight.flatten(),
        (probs - y).square().flatten(), nll.flatten(), nonfinite, probs if per_class else None,
        y if per_class else None, finite, preds.shape[0], mismatch,
    )
