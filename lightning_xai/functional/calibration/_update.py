"""The streaming update: formatted predictions into the bins, the per-class bins and the reservoir.

Pure torch. An update copies its per-prediction values ``(weight, confidence, outcome, Brier, NLL)`` into the
state's pending buffer; every 8192 predictions (and before any read, see ``_binning._settle``) the buffer is binned
with one ``bucketize`` and one ``index_add_`` and offered to the reservoir. Per batch that is one copy instead
of a dozen small ops, which is what a stream of small batches pays for; the numbers are those of binning each
batch at once (sums are float64; the order of additions changes only the last bits).
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor

import lightning_xai.functional.calibration._common as common
from lightning_xai._checks import expected
from lightning_xai.functional.calibration._binning import (
    _bin_add,
    _bin_index,
    _bin_rows,
    _flush,
    _inference_needed,
)
from lightning_xai.functional.calibration._common import _PENDING_ROWS, Input, Task, _make_generator
from lightning_xai.functional.calibration._format import _Batch, _calibration_format
from lightning_xai.functional.calibration._input_checks import calibration_check, calibration_check_values
from lightning_xai.functional.calibration._state import (  # noqa: F401  (calibration_state: the docstring examples)
    CalibrationState,
    calibration_state,
)

__all__ = ["calibration_update"]


def _push(state: CalibrationState, columns: tuple[Tensor, ...], weight: Tensor | None,
          bin_dtype: torch.dtype) -> None:
    """Queue per-prediction columns (confidence, outcome, Brier, NLL), all of one dtype, for binning.

    They are copied into rows 1-4 of the ``(5, R)`` pending buffer, whose row 0 holds ones (the weights)
    unless a batch brings weights of its own.
    """
    count, like = columns[0].shape[0], columns[0]
    pending, fill = state.pending, state.pending_fill
    if (pending is None or pending.dtype != like.dtype or state.pending_dtype != bin_dtype
            or fill + count > _PENDING_ROWS or pending.device != like.device):
        _flush(state)
        fill = 0
        if count > _PENDING_ROWS:  # a large batch: bin it at once
            first = like.new_ones(count) if weight is None else weight.to(like.dtype)
            _bin_rows(state, torch.stack((first, *columns)), bin_dtype, weight is not None)
            return
        if pending is None or pending.dtype != like.dtype or pending.device != like.device:
            state.pending = pending = like.new_ones(5, _PENDING_ROWS)
        state.pending_dtype = bin_dtype
    block = pending[:, fill:fill + count]  # type: ignore[index]
    torch.stack(columns, out=block[1:])
    if weight is not None:
        block[0] = weight
        state.pending_weighted = True
    state.pending_fill = fill + count


def _to_device(state: CalibrationState, device: torch.device) -> None:
    if state.table.device == device:
        return
    _flush(state)
    state.table, state.nonfinite = state.table.to(device), state.nonfinite.to(device)
    state.sample, state.pending = state.sample.to(device), None
    if state.class_bins is not None:
        state.class_bins = state.class_bins.to(device)
    state.cache.clear()
    if state.generator is not None and state.seen == 0:
        state.generator = _make_generator(device, state.seed)


def _calibration_update(state: CalibrationState, batch: _Batch) -> None:
    """Add one formatted batch to the state, in place; no device sync."""
    _to_device(state, batch.confidence.device)
    confidence = batch.confidence
    columns = (confidence, batch.correct, batch.brier, batch.nll)
    if batch.brier.dtype != confidence.dtype:  # float64 multiclass preds: keep the float64 losses
        dtype = torch.promote_types(confidence.dtype, batch.brier.dtype)
        columns = tuple(c.to(dtype) for c in columns)
    _push(state, columns, batch.weight, confidence.dtype)
    if batch.weight is not None:
        state.nonfinite += batch.nonfinite
    if state.class_bins is not None and batch.class_prob is not None and batch.class_correct is not None:
        prob, slots = batch.class_prob, state.n_bins + 1
        offset = torch.arange(prob.shape[1], device=prob.device) * slots
        index = (_bin_index(state, prob) + offset).flatten()
        rows = None if batch.row_weight is None else batch.row_weight[:, None].expand_as(prob).flatten()
        _bin_add(state.class_bins.view(-1, 3), index, (prob.flatten(), batch.class_correct.flatten()), rows)
    state.seen += batch.rows


def _calibration_update_step(
    state: CalibrationState,
    preds: Tensor,
    target: Tensor,
    task: Task,
    input: Input = "auto",
    validate_args: bool = True,
    target_name: str = "target",
    target_hint: str = "",
) -> str | None:
    """:func:`calibration_update` without its warning: returns how the data contradict ``input`` (or None).

    The contradiction is looked for while ``state.input_mismatch`` is None: on the CPU in every batch (from the
    smallest and largest value the update takes anyway, plus the row sums when those lie in [0, 1]); elsewhere
    only in a state's first batch and with ``validate_args`` (one device sync), so that ``validate_args=False``
    stays sync-free. ``input="probs"`` with ``validate_args`` raises instead (the value checks).
    ``target_name``/``target_hint`` name the labels in errors (a callback: ``labels``, from its
    ``batch_to_inputs``).
    """
    calibration_check(preds, target, task, input, state.num_classes, target_name, target_hint)
    if state.task is not None and task != state.task:
        raise ValueError(expected("task", f"{state.task!r}, the task of this state's earlier updates", task))
    if state.per_class and task == "binary":
        raise ValueError(expected("task", "'multiclass' or 'multilabel' for a state with `per_class=True`",
                                  task))
    if validate_args:
        calibration_check_values(preds, target, task, input, target_name, target_hint)
    check_input = (input != "auto" and state.input_mismatch is None and not (validate_args and input == "probs")
                   and (common._branch_on_values(preds) or (validate_args and state.seen == 0)))
    batch = _calibration_format(preds, target, task, input, per_class=state.per_class, check_input=check_input)
    with torch.inference_mode() if _inference_needed(state) else contextlib.nullcontext():
        _calibration_update(state, batch)
    state.task = task
    if batch.mismatch is not None:
        state.input_mismatch = batch.mismatch
    return batch.mismatch


def calibration_update(
    state: CalibrationState,
    preds: Tensor,
    target: Tensor,
    task: Task,
    input: Input = "auto",
    validate_args: bool = True,
) -> CalibrationState:
    """Add a batch of predictions to ``state`` (in place) and return it.

    With ``validate_args=False`` the update makes no device sync (useful on accelerators, every batch); the
    value checks on ``target`` and on ``input="probs"`` are then skipped.

    A declared ``input`` that the data contradict gets a ``UserWarning``, once per state: ``"logits"`` for
    multiclass rows that all lie in [0, 1] and sum to 1 (softmax would be applied twice) and, without the
    value checks, ``"probs"`` for values outside [0, 1] or rows that do not sum to 1. It is looked for in every
    batch on the CPU (nearly free: the update takes the smallest and largest value anyway) and elsewhere in the
    state's first batch, with ``validate_args`` only.

    Args:
        state: From :func:`calibration_state`.
        preds: ``(N,)`` for binary, ``(N, C)`` for multiclass, ``(N, L)`` for multilabel; float.
        target: ``(N,)`` of 0/1 (binary), ``(N,)`` of class indices (multiclass), ``(N, L)`` of 0/1
            (multilabel).
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``; the same for every update of one state.
        input: ``"probs"``, ``"logits"`` or ``"auto"`` (see :mod:`lightning_xai.functional.calibration`).
        validate_args: Check the values of ``target`` and, with ``input="probs"``, of ``preds``.

    Returns:
        ``state``, updated.

    Raises:
        TypeError: If ``preds``/``target`` are not tensors of the right kind.
        ValueError: If shapes, values or arguments are invalid, e.g. ``input="probs"`` with multiclass rows
            that do not sum to 1.

    Example:
        >>> state = calibration_state(n_bins=2, adaptive_sample=0)
        >>> _ = calibration_update(state, torch.tensor([0.25, 0.25, 0.55]), torch.tensor([0, 0, 1]), "binary")
        >>> _ = calibration_update(state, torch.tensor([0.75, 0.75]), torch.tensor([1, 1]), "binary")
        >>> state.counts
        tensor([2., 3., 0.], dtype=torch.float64)
    """
    mismatch = _calibration_update_step(state, preds, target, task, input, validate_args)
    if mismatch is not None:  # only looked for until a state has one: once per state
        warnings.warn(f"lightning_xai: {mismatch}", UserWarning, stacklevel=2)
    return state
