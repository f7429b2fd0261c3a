"""Calibration: do the predicted probabilities match the frequencies that are observed?

Pure torch. Three tasks share one set of bins:

* ``"binary"``: ``preds`` ``(N,)`` is the probability (or logit) of the positive class and the calibration of
  ``p(y=1)`` is measured, exactly as torchmetrics' ``BinaryCalibrationError``.
* ``"multiclass"``: ``preds`` ``(N, C)``; the top-label confidence (largest probability) is compared with
  whether the top label is right, exactly as torchmetrics' ``MulticlassCalibrationError``.
* ``"multilabel"``: ``preds`` ``(N, L)``, ``target`` ``(N, L)`` of 0/1; every label is its own binary problem
  and the ``N * L`` pairs are binned together (torchmetrics' binary metric on the flattened arrays).

``input`` says what ``preds`` hold: ``"probs"``, ``"logits"`` (sigmoid for binary/multilabel, softmax over
``dim=1`` for multiclass) or ``"auto"``: probabilities when every finite value lies in ``[0, 1]`` and, for
multiclass, every finite row sums to 1 within ``1e-3``; logits otherwise. A declared ``input`` that the data
contradict is said in a ``UserWarning`` (``"logits"`` on multiclass rows that are all distributions: softmax would
be applied twice) or a ``ValueError`` (``"probs"`` outside [0, 1] or rows not summing to 1, while the values are
checked). Rows of ``preds`` holding a NaN or an infinity are left out of every statistic and counted
(``nonfinite``).

The bins are torchmetrics' to the bit: ``torch.bucketize(confidence, torch.linspace(0, 1, n_bins + 1),
right=True) - 1`` with the boundaries in the confidence's dtype (float32 for multiclass, as torchmetrics
casts the top-label confidence; the preds' dtype for binary/multilabel). That rule puts a confidence of
exactly 1.0 into an extra slot ``n_bins`` of its own, so every per-bin tensor here has ``n_bins + 1`` slots
and the ECE/MCE/RMSCE treat that slot as a bin, as torchmetrics does. :func:`reliability_bins` folds it
into the last bin, ``[1 - 1/n_bins, 1]``, for plotting.

The streaming form -- :func:`calibration_state`, :func:`calibration_update`, :func:`calibration_merge`,
:func:`calibration_compute` -- keeps O(``n_bins`` x classes + ``adaptive_sample``) memory whatever the
number of predictions; the one-shot functions (:func:`expected_calibration_error`, :func:`reliability_bins`,
:func:`brier_score`, :func:`negative_log_likelihood`) run the same private steps on one batch, so the two
never disagree. :func:`fit_temperature` is temperature scaling (Guo et al., "On Calibration of Modern Neural
Networks", ICML 2017).

A :class:`CalibrationState` is a few float64 tables (per bin: count, sums of confidence, outcome, Brier score
and NLL; optionally the same per class) that add up across batches and processes (:func:`state_tensors` for
an all-reduce), plus a bounded reservoir sample for the equal-mass ECE. An update copies its per-prediction
rows into a small buffer that is binned 8192 predictions at a time (and before every read), so a stream of
small batches pays one copy per batch rather than a dozen small ops. On the CPU an update branches on the
data freely; elsewhere it makes no device sync (with ``validate_args=False``): non-finite rows are weighted
out instead of removed and ``input="auto"`` decides with ``torch.where``.

The steps live in private modules, one job each: ``_common`` (types, constants, the state's fields),
``_state`` (the state), ``_input_checks`` (argument, shape and value checks), ``_format`` (one checked batch
to per-prediction rows), ``_update`` (rows into the pending buffer), ``_binning`` (pending rows into the
bins), ``_reservoir`` (the sample for ``ace``), ``_merge`` (merging, DDP tensors), ``_compute`` (metrics) and
``_temperature``; this package re-exports their public functions and holds the one-shot ones.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from lightning_xai._checks import check_choice, check_positive_int
from lightning_xai.functional.calibration._common import _NORMS, Input, Norm, Task
from lightning_xai.functional.calibration._compute import (  # noqa: F401  (private steps the callback reuses)
    _bin_errors,
    _calibration_compute,
    _calibration_summary,
    _reliability_compute,
    calibration_compute,
)
from lightning_xai.functional.calibration._format import (  # noqa: F401  (private steps the callback reuses)
    _calibration_format,
    _infer_task,
)
from lightning_xai.functional.calibration._input_checks import calibration_check, calibration_check_values
from lightning_xai.functional.calibration._merge import (
    calibration_merge,
    portable_state,
    state_from_tensors,
    state_tensors,
)
from lightning_xai.functional.calibration._state import CalibrationState, calibration_state
from lightning_xai.functional.calibration._temperature import _temperature_ece, fit_temperature  # noqa: F401
from lightning_xai.functional.calibration._update import (  # noqa: F401  (private steps the callback reuses)
    _calibration_update,
    _calibration_update_step,
    calibration_update,
)

__all__ = [
    "CalibrationState",
    "brier_score",
    "calibration_compute",
    "calibration_merge",
    "calibration_state",
    "calibration_update",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "portable_state",
    "reliability_bins",
    "state_from_tensors",
    "state_tensors",
]


def _one_shot(preds: Tensor, target: Tensor, n_bins: int, task: Any, input: Any) -> CalibrationState:
    check_positive_int("n_bins", n_bins)
    calibration_check(preds, target, task, input)
    calibration_check_values(preds, target, task, input)  # input="probs" contradicted: an error
    state = calibration_state(n_bins, adaptive_sample=0, device=preds.device)
    batch = _calibration_format(preds, target, task, input, check_input=input == "logits")
    if batch.mismatch is not None:
        warnings.warn(f"lightning_xai: {batch.mismatch}", UserWarning, stacklevel=3)
    _calibration_update(state, batch)
    state.task = task
    return state


def expected_calibration_error(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    task: Task = "multiclass",
    norm: Norm = "l1",
    input: Input = "auto",
) -> Tensor:
    """Calibration error over ``n_bins`` equal-width bins, equal to torchmetrics' for the same arguments.

    ``norm="l1"`` is the expected calibration error (ECE), ``"max"`` the maximum (MCE), ``"l2"`` the root
    mean square (RMSCE): with ``a_b``, ``c_b``, ``s_b`` the mean outcome, mean confidence and share of the
    predictions of bin ``b``, ``sum_b s_b |a_b - c_b|``, ``max_b |a_b - c_b|`` and
    ``sqrt(sum_b s_b (a_b - c_b)**2)``. Rows with NaN or infinities are left out.

    Args:
        preds: ``(N,)``, ``(N, C)`` or ``(N, L)`` probabilities or logits (see the module docstring).
        target: ``(N,)`` 0/1, ``(N,)`` class indices or ``(N, L)`` 0/1.
        n_bins: Number of equal-width bins.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        norm: ``"l1"``, ``"max"`` or ``"l2"``.
        input: ``"probs"``, ``"logits"`` or ``"auto"``.

    Returns:
        0-dim tensor (default dtype); NaN if no row is finite.

    Raises:
        TypeError: If ``preds``/``target`` are not tensors of the right kind.
        ValueError: If shapes, values or arguments are invalid.

    Example:
        >>> preds = torch.tensor([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
        ...                       [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
        >>> target = torch.tensor([0, 1, 2, 0])
        >>> expected_calibration_error(preds, target, n_bins=3)
        tensor(0.2000)
        >>> expected_calibration_error(preds, target, n_bins=3, norm="max")
        tensor(0.2333)
    """
    check_choice("norm", norm, _NORMS)
    state = _one_shot(preds, target, n_bins, task, input)
    ece, mce, rmsce = _bin_errors(state.counts, state.confidence_sum, state.correct_sum)
    return {"l1": ece, "max": mce, "l2": rmsce}[norm].to(torch.get_default_dtype())


def reliability_bins(
    preds: Tensor,
    target: Tensor,
    n_bins: int = 15,
    task: Task = "multiclass",
    input: Input = "auto",
) -> dict[str, Tensor]:
    """What a reliability diagram plots: per equal-width bin, the count, mean outcome and mean confidence.

    The bins are those of :func:`expected_calibration_error`, with torchmetrics' extra slot for confidences of
    exactly 1.0 folded into the last bin ``[1 - 1/n_bins, 1]``.

    Args:
        preds: ``(N,)``, ``(N, C)`` or ``(N, L)`` probabilities or logits.
        target: ``(N,)`` 0/1, ``(N,)`` class indices or ``(N, L)`` 0/1.
        n_bins: Number of equal-width bins.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        input: ``"probs"``, ``"logits"`` or ``"auto"``.

    Returns:
        Dict with ``edges`` ``(n_bins + 1,)``, ``counts`` ``(n_bins,)`` int64, ``accuracy`` and
        ``confidence`` ``(n_bins,)`` (NaN for empty bins).

    Raises:
        TypeError: If ``preds``/``target`` are not tensors of the right kind.
        ValueError: If shapes, values or arguments are invalid.

    Example:
        >>> bins = reliability_bins(torch.tensor([0.1, 0.2, 0.9, 1.0]), torch.tensor([0, 1, 1, 1]), n_bins=2,
        ...                         task="binary")
        >>> bins["counts"], bins["accuracy"], bins["confidence"]
        (tensor([2, 2]), tensor([0.5000, 1.0000]), tensor([0.1500, 0.9500]))
    """
    return _reliability_compute(_one_shot(preds, target, n_bins, task, input))


def brier_score(preds: Tensor, target: Tensor, task: Task = "multiclass", input: Input = "auto") -> Tensor:
    """Mean Brier score (Brier, 1950).

    Multiclass: ``sum_c (p_c - [y = c])**2`` per sample (0 best, 2 worst); binary and multilabel:
    ``(p - y)**2`` per prediction (0 best, 1 worst). Rows with NaN or infinities are left out.

    Args:
        preds: ``(N,)``, ``(N, C)`` or ``(N, L)`` probabilities or logits.
        target: ``(N,)`` 0/1, ``(N,)`` class indices or ``(N, L)`` 0/1.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        input: ``"probs"``, ``"logits"`` or ``"auto"``.

    Returns:
        0-dim tensor (default dtype).

    Raises:
        TypeError: If ``preds``/``target`` are not tensors of the right kind.
        ValueError: If shapes, values or arguments are invalid.

    Example:
        >>> brier_score(torch.tensor([[0.8, 0.2], [0.4, 0.6]]), torch.tensor([0, 0]))  # (0.08 + 0.72) / 2
        tensor(0.4000)
    """
    return _calibration_compute(_one_shot(preds, target, 1, task, input))["brier"]


def negative_log_likelihood(
    preds: Tensor, target: Tensor, task: Task = "multiclass", input: Input = "auto"
) -> Tensor:
    """Mean negative log-likelihood in nats.

    Multiclass: ``-log p_y`` (from logits, exactly ``F.cross_entropy``); binary and multilabel: the binary
    cross-entropy per prediction (``F.binary_cross_entropy_with_logits`` / ``F.binary_cross_entropy``). From
    probabilities ``log p`` is clamped at -100, as ``F.binary_cross_entropy`` does. Rows with NaN or
    infinities are left out.

    Args:
        preds: ``(N,)``, ``(N, C)`` or ``(N, L)`` probabilities or logits.
        target: ``(N,)`` 0/1, ``(N,)`` class indices or ``(N, L)`` 0/1.
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        input: ``"probs"``, ``"logits"`` or ``"auto"``.

    Returns:
        0-dim tensor (default dtype).

    Raises:
        TypeError: If ``preds``/``target`` are not tensors of the right kind.
        ValueError: If shapes, values or arguments are invalid.

    Example:
        >>> negative_log_likelihood(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
        tensor(0.2201)
    """
    return _calibration_compute(_one_shot(preds, target, 1, task, input))["nll"]
