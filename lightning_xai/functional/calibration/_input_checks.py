"""Calibration input checks: types and shapes, values, and the message for an ``input`` the data contradict.

Pure torch. :func:`calibration_check` looks at types and shapes only (no device sync),
:func:`calibration_check_values` at the values (``validate_args=True``), and :func:`input_mismatch` says how
the predictions contradict a declared ``input="logits"`` or ``"probs"`` (for the formatting step, which
:mod:`~lightning_xai.functional.calibration._format` holds).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_xai._checks import check_choice, expected
from lightning_xai.functional.calibration._common import _F64, _INPUTS, _TASKS

__all__ = ["ROW_SUM_TOL", "calibration_check", "calibration_check_values", "finite_rows", "input_mismatch"]

ROW_SUM_TOL = 1e-3  # how far a row of probabilities may sum from 1


def _check_task_input(task: Any, input: Any) -> None:
    if task not in _TASKS:
        check_choice("task", task, _TASKS)
    if input not in _INPUTS:
        check_choice("input", input, _INPUTS)


def calibration_check(
    preds: Any, target: Any, task: Any, input: Any, num_classes: int | None = None, target_name: str = "target",
    target_hint: str = "",
) -> None:
    """Argument, type and shape checks; no look at the values (so no device sync).

    ``target_name`` is the argument the caller knows the labels by and ``target_hint`` (appended to a label
    error) says where they come from: a callback names ``labels`` and its ``batch_to_inputs``.

    Example:
        >>> calibration_check(torch.tensor([[0.3, 0.7]]), torch.tensor([1]), "multiclass", "probs")
        >>> binary = torch.tensor([0.3, 0.7])
        >>> calibration_check(binary, torch.tensor([1]), "binary", "probs")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `target` to be a tensor of shape (2,) like the predictions, but got ...
    """
    _check_task_input(task, input)
    if not isinstance(preds, Tensor):
        raise TypeError(expected("preds", "a torch.Tensor", type(preds).__name__))
    if not isinstance(target, Tensor):
        raise TypeError(expected(target_name, "a torch.Tensor", type(target).__name__) + target_hint)
    if not preds.is_floating_point():
        raise TypeError(expected("preds", "a floating point tensor of probabilities or logits", preds.dtype))
    if task == "binary":
        if preds.ndim != 1:
            raise ValueError(expected("preds", "a tensor of shape (N,) for task='binary'",
                                      tuple(preds.shape)))
        if tuple(target.shape) != tuple(preds.shape):
            raise ValueError(expected(target_name, f"a tensor of shape {tuple(preds.shape)} like the predictions",
                                      tuple(target.shape)) + target_hint)
        return
    if preds.ndim != 2:
        rows = " (one row per sample: reduce frame-wise or per-pixel scores first, e.g. preds.mean(1))"
        raise ValueError(expected("preds", f"a tensor of shape (N, C) for task={task!r}" + rows * (preds.ndim > 2),
                                  tuple(preds.shape)))
    if task == "multiclass" and preds.shape[1] < 2:
        raise ValueError(expected("preds", "a tensor of shape (N, C) with C >= 2 for task='multiclass'",
                                  tuple(preds.shape)))
    if num_classes is not None and preds.shape[1] != num_classes:
        raise ValueError(expected("preds", f"a tensor of shape (N, {num_classes}) (`num_classes`)",
                                  tuple(preds.shape)))
    if task == "multiclass":
        if tuple(target.shape) != (preds.shape[0],):
            raise ValueError(expected(target_name, f"a tensor of shape ({preds.shape[0]},) of class indices, one "
                                      "per row of the predictions", tuple(target.shape)) + target_hint)
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(expected(target_name, "an integer tensor of class indices", target.dtype) + target_hint)
    elif tuple(target.shape) != tuple(preds.shape):
        raise ValueError(expected(target_name, f"a tensor of shape {tuple(preds.shape)} like the predictions",
                                  tuple(target.shape)) + target_hint)


def calibration_check_values(
    preds: Tensor, target: Tensor, task: str, input: str, target_name: str = "target", target_hint: str = ""
) -> None:
    """Value checks (these read the data, hence a device sync); skipped with ``validate_args=False``.

    Example:
        >>> calibration_check_values(torch.tensor([[0.3, 0.7]]), torch.tensor([1]), "multiclass", "probs")
        >>> calibration_check_values(torch.tensor([0.3, 0.7]), torch.tensor([1, 2]), "binary", "probs")
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `target` to be a tensor of 0s and 1s, but got 'values such as [2]'.
    """
    if target.numel():
        low, high = (int(v) for v in torch.aminmax(target))
        classes = preds.shape[1] if task == "multiclass" else 2
        if task == "multiclass" and (low < 0 or high >= classes):
            bad = target[(target < 0) | (target >= classes)].unique()[:5].tolist()
            raise ValueError(expected(
                target_name, f"class indices in [0, {classes - 1}] ({classes} classes: the width of the "
                "predictions)", f"values from {low} to {high}, such as {bad}") + target_hint)
        if task != "multiclass" and not (low >= 0 and high <= 1 and bool(((target == 0) | (target == 1)).all())):
            bad = target[(target != 0) & (target != 1)].flatten().unique()[:5].tolist()
            raise ValueError(expected(target_name, "a tensor of 0s and 1s", f"values such as {bad}") + target_hint)
    if input != "probs" or preds.numel() == 0:
        return
    x = preds if bool(torch.isfinite(preds.sum())) else preds[finite_rows(preds)]
    if x.numel():
        low_p, high_p = (float(v) for v in torch.aminmax(x))
        if low_p < 0 or high_p > 1:
            raise ValueError(expected("input", f"'logits' or 'auto' for `preds` with values outside [0, 1] (from "
                                      f"{low_p:.4g} to {high_p:.4g}: they look like logits)", "probs"))
    if task == "multiclass" and x.numel():
        deviation = float((x.sum(dim=1, dtype=_F64) - 1).abs().max())
        if deviation > ROW_SUM_TOL:
            raise ValueError(expected(
                "input", f"'logits' or 'auto' for rows of `preds` that do not sum to 1 (largest deviation "
                f"{deviation:.3g}, tolerance {ROW_SUM_TOL:g})", "probs"))


_LOGITS_FIX = ("Pass input='probs' (or input='auto'), or give logits (e.g. a model without its final softmax); "
               "softmax applied twice pulls every confidence toward 1/C, so ECE, MCE, Brier and NLL are wrong")
_PROBS_FIX = "Pass input='logits' (or input='auto'), or give probabilities (softmax/sigmoid of the logits)"


def _outside_unit(low: float, high: float) -> str:
    return f"the predictions range from {low:.4g} to {high:.4g}, outside [0, 1]: they look like logits"


def _not_summing(deviation: float) -> str:
    return (f"rows of the predictions do not sum to 1 (largest deviation {deviation:.3g}, tolerance "
            f"{ROW_SUM_TOL:g}): they are no probability distributions over the classes")


def _mismatch_message(input: str, found: str, fix: str) -> str:
    """The one message for a declared ``input`` that the data contradict."""
    return f"Argument `input` is {input!r}, but {found}. {fix}."


def input_mismatch(
    x: Tensor, task: str, input: str, finite: Tensor | None, bounds: tuple[float, float] | None
) -> str | None:
    """How the data contradict the declared ``input``, as a message, or None when they agree.

    * ``input="logits"``, multiclass: every (finite) row lies in [0, 1] and sums to 1 within ``1e-3``: a
      distribution, which real logits almost never are row after row (softmax would be applied twice).
      Binary and multilabel logits in [0, 1] are plausible (a model unsure of every sample), so they pass.
    * ``input="probs"``: a value outside [0, 1], or a multiclass row that does not sum to 1.

    ``bounds`` are the smallest and largest value of ``x`` when already known (every value finite); the row sums
    are only taken when they lie in [0, 1]. Reads values: a device sync off the CPU.

    Example:
        >>> probs = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
        >>> input_mismatch(probs, "multiclass", "probs", None, None) is None
        True
        >>> input_mismatch(probs, "multiclass", "logits", None, None)[:60]
        "Argument `input` is 'logits', but every row of the predictio"
    """
    if input == "auto" or (input == "logits" and task != "multiclass") or x.numel() == 0:
        return None
    kept = x if finite is None else x[finite]
    if kept.numel() == 0:
        return None
    low, high = bounds if bounds is not None else (float(v) for v in torch.aminmax(kept))
    inside = low >= 0 and high <= 1
    if input == "probs" and not inside:
        return _mismatch_message(input, _outside_unit(low, high), _PROBS_FIX)
    if not inside or task != "multiclass":
        return None
    deviation = float((kept.sum(dim=1) - 1).abs().max())
    if input == "logits" and deviation <= ROW_SUM_TOL:
        found = (f"every row of the predictions lies in [0, 1] and sums to 1 (values from {low:.4g} to {high:.4g}, "
                 f"row sums within {deviation:.2g} of 1): they look like probabilities")
        return _mismatch_message(input, found, _LOGITS_FIX)
    if input == "probs" and deviation > ROW_SUM_TOL:
        return _mismatch_message(input, _not_summing(deviation), _PROBS_FIX)
    return None


def finite_rows(preds: Tensor) -> Tensor:
    """Which rows of ``(N,)`` or ``(N, C)`` predictions hold only finite values, as an ``(N,)`` bool tensor.

    Example:
        >>> finite_rows(torch.tensor([[0.2, 0.8], [float("nan"), 1.0]])).tolist()
        [True, False]
    """
    finite = torch.isfinite(preds)
    return finite if preds.ndim == 1 else finite.all(dim=1)
