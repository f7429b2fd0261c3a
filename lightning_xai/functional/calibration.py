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
multiclass, every finite row sums to 1 within ``1e-3``; logits otherwise. Rows of ``preds`` holding a NaN or
an infinity are left out of every statistic and counted (``nonfinite``).

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
an all-reduce), plus a bounded reservoir sample for the equal-mass ECE. On the CPU an update branches on the
data freely; elsewhere it makes no device sync (with ``validate_args=False``): non-finite rows are weighted
out instead of removed and ``input="auto"`` decides with ``torch.where``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai._checks import check_choice, check_non_negative_int, check_positive_int, expected

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
    "reliability_bins",
    "state_from_tensors",
    "state_tensors",
]

Task = Literal["binary", "multiclass", "multilabel"]
Input = Literal["auto", "logits", "probs"]
Norm = Literal["l1", "max", "l2"]

_TASKS = ("binary", "multiclass", "multilabel")
_INPUTS = ("auto", "logits", "probs")
_NORMS = ("l1", "max", "l2")
_ROW_SUM_TOL = 1e-3
_LOG_FLOOR = -100.0  # F.binary_cross_entropy's clamp of log(p)
_F64 = torch.float64
_RESERVOIR_SALT = 0x5EED_CA1B  # mixed into `seed`: the reservoir never replays a user generator seeded alike


@dataclass(eq=False)
class CalibrationState:
    """Running calibration statistics; create it with :func:`calibration_state`.

    Every tensor lives on one device (the preds' device after the first update). The summable statistics are
    packed into float64 tensors so that an update is one scatter per table and a DDP reduction two or three
    all-reduces (see :func:`state_tensors`); counts are exact up to 2**53. Per-bin tables have ``n_bins + 1``
    slots: the last holds confidences of exactly 1.0 (see the module docstring). Named properties such as
    :attr:`counts` read the packed columns.

    Attributes:
        n_bins: Number of equal-width bins on ``[0, 1]``.
        bins: ``(n_bins + 1, 5)`` float64; per bin, the number of predictions and the sums of their
            confidences, outcomes (top label right for multiclass, the 0/1 target for binary/multilabel),
            Brier scores and negative log-likelihoods (nats). Brier and NLL thus also split by confidence.
        nonfinite: ``()`` float64, rows of ``preds`` left out for holding a NaN or an infinity.
        class_bins: ``(C, n_bins + 1, 3)`` float64 one-vs-rest bins per class (per label for multilabel):
            count, confidence sum, outcome sum; None unless ``per_class``.
        sample: ``(S, 3)`` float32 reservoir buffer, one row per buffered prediction, growing with the
            stream up to ``S = 2 * adaptive_sample``; columns: uniform random key (``inf`` for a non-finite
            prediction), confidence (NaN for a non-finite prediction), outcome.
        sample_fill: Rows of ``sample`` in use.
        sample_keyed: Rows of ``sample`` that have their key; the rest get theirs, in bulk, at the next cut.
        sample_pushed: Predictions that went into the buffer so far.
        sample_threshold: On the CPU, every key of the stream up to this value is still in the buffer
            (``inf`` before the first cut); it lets a cut skip the ``topk``.
        adaptive_sample: Size of the reservoir sample used for the equal-mass ECE (0: none).
        seed: Seed of ``generator``.
        generator: The reservoir's own ``torch.Generator`` (never the global one), or None.
        num_classes: Number of classes/labels if fixed, else None.
        task: The task of the first update (later updates must match), or None.
        seen: Rows passed to :func:`calibration_update` on this process (a Python int: no device sync).

    Example:
        >>> state = calibration_state(n_bins=4, adaptive_sample=0)
        >>> tuple(state.bins.shape), tuple(state.counts.shape), state.counts.dtype
        ((5, 5), (5,), torch.float64)
    """

    n_bins: int
    bins: Tensor
    nonfinite: Tensor
    class_bins: Tensor | None
    sample: Tensor = field(repr=False)
    sample_fill: int = 0
    sample_keyed: int = 0
    sample_pushed: int = 0
    sample_threshold: float = math.inf
    adaptive_sample: int = 0
    seed: int = 0
    generator: torch.Generator | None = field(default=None, repr=False)
    num_classes: int | None = None
    task: str | None = None
    seen: int = 0
    edges_cache: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        """The device holding the state's tensors."""
        return self.bins.device

    @property
    def per_class(self) -> bool:
        """Whether the state keeps one-vs-rest bins per class."""
        return self.class_bins is not None

    @property
    def counts(self) -> Tensor:
        """``(n_bins + 1,)`` predictions per bin (a view)."""
        return self.bins[:, 0]

    @property
    def confidence_sum(self) -> Tensor:
        """``(n_bins + 1,)`` sum of the confidences per bin (a view)."""
        return self.bins[:, 1]

    @property
    def correct_sum(self) -> Tensor:
        """``(n_bins + 1,)`` sum of the outcomes per bin (a view)."""
        return self.bins[:, 2]

    @property
    def brier_sum(self) -> Tensor:
        """``()`` sum of the per-prediction Brier scores."""
        return self.bins[:, 3].sum()

    @property
    def nll_sum(self) -> Tensor:
        """``()`` sum of the per-prediction negative log-likelihoods (nats)."""
        return self.bins[:, 4].sum()

    @property
    def class_counts(self) -> Tensor | None:
        """``(C, n_bins + 1)`` per-class predictions per bin (a view), or None."""
        return None if self.class_bins is None else self.class_bins[..., 0]


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


# ----------------------------------------------------------------------------------------------- checks


def _check_task_input(task: Any, input: Any) -> None:
    if task not in _TASKS:
        check_choice("task", task, _TASKS)
    if input not in _INPUTS:
        check_choice("input", input, _INPUTS)


def _calibration_check(
    preds: Any, target: Any, task: Any, input: Any, num_classes: int | None = None
) -> None:
    """Argument, type and shape checks; no look at the values (so no device sync)."""
    _check_task_input(task, input)
    if not isinstance(preds, Tensor):
        raise TypeError(expected("preds", "a torch.Tensor", type(preds).__name__))
    if not isinstance(target, Tensor):
        raise TypeError(expected("target", "a torch.Tensor", type(target).__name__))
    if not preds.is_floating_point():
        raise TypeError(expected("preds", "a floating point tensor of probabilities or logits", preds.dtype))
    if task == "binary":
        if preds.ndim != 1:
            raise ValueError(expected("preds", "a tensor of shape (N,) for task='binary'",
                                      tuple(preds.shape)))
        if tuple(target.shape) != tuple(preds.shape):
            raise ValueError(expected("target", f"a tensor of shape {tuple(preds.shape)} like `preds`",
                                      tuple(target.shape)))
        return
    if preds.ndim != 2:
        raise ValueError(expected("preds", f"a tensor of shape (N, C) for task={task!r}", tuple(preds.shape)))
    if task == "multiclass" and preds.shape[1] < 2:
        raise ValueError(expected("preds", "a tensor of shape (N, C) with C >= 2 for task='multiclass'",
                                  tuple(preds.shape)))
    if num_classes is not None and preds.shape[1] != num_classes:
        raise ValueError(expected("preds", f"a tensor of shape (N, {num_classes}) (`num_classes`)",
                                  tuple(preds.shape)))
    if task == "multiclass":
        if tuple(target.shape) != (preds.shape[0],):
            raise ValueError(expected("target", f"a tensor of shape ({preds.shape[0]},) of class indices",
                                      tuple(target.shape)))
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(expected("target", "an integer tensor of class indices", target.dtype))
    elif tuple(target.shape) != tuple(preds.shape):
        raise ValueError(expected("target", f"a tensor of shape {tuple(preds.shape)} like `preds`",
                                  tuple(target.shape)))


def _calibration_check_values(preds: Tensor, target: Tensor, task: str, input: str) -> None:
    """Value checks (these read the data, hence a device sync); skipped with ``validate_args=False``."""
    if target.numel():
        low, high = (int(v) for v in torch.aminmax(target))
        if task == "multiclass" and (low < 0 or high >= preds.shape[1]):
            raise ValueError(expected("target", f"class indices in [0, {preds.shape[1] - 1}]",
                                      f"values from {low} to {high}"))
        binary = low >= 0 and high <= 1 and bool(((target == 0) | (target == 1)).all())
        if task != "multiclass" and not binary:
            bad = target[(target != 0) & (target != 1)].flatten()[:5].tolist()
            raise ValueError(expected("target", "a tensor of 0s and 1s", f"values such as {bad}"))
    if input != "probs" or preds.numel() == 0:
        return
    x = preds if bool(torch.isfinite(preds.sum())) else preds[_finite_rows(preds)]
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(expected("input", "'logits' or 'auto' for `preds` with values outside [0, 1]",
                                  "probs"))
    if task == "multiclass" and x.numel():
        deviation = float((x.sum(dim=1, dtype=_F64) - 1).abs().max())
        if deviation > _ROW_SUM_TOL:
            raise ValueError(expected(
                "input", f"'logits' or 'auto' for rows of `preds` that do not sum to 1 (largest deviation "
                f"{deviation:.3g}, tolerance {_ROW_SUM_TOL:g})", "probs"))


# ----------------------------------------------------------------------------------------------- format


def _finite_rows(preds: Tensor) -> Tensor:
    finite = torch.isfinite(preds)
    return finite if preds.ndim == 1 else finite.all(dim=1)


def _branch_on_values(preds: Tensor) -> bool:
    """Whether Python may branch on values of ``preds`` for free: on the CPU there is no device to wait for.

    Elsewhere the update makes no device sync: non-finite rows are zeroed and weighted out instead of removed,
    and ``input="auto"`` decides with ``torch.where``. Both paths give the same numbers.
    """
    return preds.device.type == "cpu"


def _select(is_probs: bool | Tensor, probs: Callable[[], Tensor], logits: Callable[[], Tensor]) -> Tensor:
    """``probs()`` or ``logits()``; with a tensor flag (``input="auto"`` off the CPU) both, then ``where``."""
    if isinstance(is_probs, bool):
        return probs() if is_probs else logits()
    return torch.where(is_probs, probs(), logits())


def _looks_like_probs(x: Tensor, task: str, finite: Tensor | None, branch: bool) -> bool | Tensor:
    """``input="auto"``: every finite value in [0, 1] and, for multiclass, every finite row summing to 1."""
    if branch:
        kept = x if finite is None else x[finite]
        if kept.numel() == 0:
            return True
        if float(kept.amax()) > 1 or float(kept.amin()) < 0:
            return False
        return task != "multiclass" or bool(((kept.sum(dim=1) - 1).abs() <= _ROW_SUM_TOL).all())
    ok = (x >= 0) & (x <= 1)
    if task == "multiclass":
        ok = ok.all(dim=1) & ((x.sum(dim=1) - 1).abs() <= _ROW_SUM_TOL)
    elif task == "multilabel":
        ok = ok.all(dim=1)
    return ok.all() if finite is None else (ok | ~finite).all()


def _top_label(
    probs: Tensor, y: Tensor, column: Tensor, p_y: Tensor, branch: bool, scratch: bool
) -> tuple[Tensor, Tensor]:
    """Top-label confidence and whether the top label is ``y``, exactly as ``probs.max(dim=1)`` decides.

    On the CPU ``max(dim=1)`` is slow for returning indices. With ``m`` the largest probability of the other
    classes, the top label is ``y`` when ``p_y > m`` and is not when ``p_y < m``; only a tie ``p_y == m``
    needs the first-index rule of ``max(dim=1)``, which is then used for the batch. ``column`` is ``y`` as
    ``(N, 1)``; with ``scratch`` the probabilities may be overwritten (and are restored before a tie rule).
    """
    if branch and probs.numel():
        masked = probs.scatter_(1, column, -1.0) if scratch else probs.scatter(1, column, -1.0)
        others = masked.amax(dim=1)
        if not bool((p_y == others).any()):
            return torch.maximum(p_y, others), p_y > others
        if scratch:
            probs.scatter_(1, column, p_y.unsqueeze(1))
    top, predicted = probs.max(dim=1)
    return top, predicted == y


def _multiclass_nll(x: Tensor, column: Tensor, p_y: Tensor, is_probs: bool | Tensor, branch: bool) -> Tensor:
    """``-log p_y``; from logits ``logsumexp(x) - x_y`` where ``p_y`` underflows, so it is cross-entropy."""

    def from_probs() -> Tensor:
        return -p_y.log().clamp(min=_LOG_FLOOR)

    def from_logits() -> Tensor:
        nll = p_y.log().neg_()
        tiny = torch.finfo(p_y.dtype).tiny
        if branch and (p_y.numel() == 0 or float(p_y.min()) >= tiny):
            return nll
        exact = torch.logsumexp(x, dim=1) - x.gather(1, column).squeeze(1)
        return torch.where(p_y < tiny, exact, nll)

    return _select(is_probs, from_probs, from_logits)


def _binary_nll(x: Tensor, y: Tensor, probs: Tensor, is_probs: bool | Tensor) -> Tensor:
    """Per-prediction binary cross-entropy: as ``F.binary_cross_entropy`` (log >= -100) or from logits."""

    def from_probs() -> Tensor:  # F.binary_cross_entropy's formula, without its range assertion
        return -(y * probs.log().clamp(min=_LOG_FLOOR) + (1 - y) * (-probs).log1p().clamp(min=_LOG_FLOOR))

    return _select(is_probs, from_probs, lambda: F.binary_cross_entropy_with_logits(x, y, reduction="none"))


def _calibration_format(
    preds: Tensor, target: Tensor, task: str, input: str, per_class: bool = False
) -> _Batch:
    """Probabilities, confidences, outcomes and per-prediction Brier/NLL for one checked batch.

    The probabilities come from the very ops torchmetrics uses (``torch.softmax(dim=1)`` / ``torch.sigmoid``)
    and the top label follows ``max(dim=1)`` (see :func:`_top_label`), with float32 top-label confidences,
    so the bins agree bit for bit.
    """
    preds = preds.detach()
    if target.device != preds.device:
        target = target.to(preds.device)
    branch = _branch_on_values(preds)
    finite: Tensor | None = None
    nonfinite: Tensor | int = 0
    x = preds
    # on the CPU, a finite sum means every value is finite (an overflowing sum just takes the long way)
    if not (branch and math.isfinite(float(preds.sum()))):
        finite = _finite_rows(preds)
        x = torch.nan_to_num(preds, nan=0.0, posinf=0.0, neginf=0.0)
        nonfinite = (~finite).sum()
    is_probs = input == "probs" if input != "auto" else _looks_like_probs(x, task, finite, branch)
    if task == "multiclass":
        probs = _select(is_probs, lambda: x, lambda: torch.softmax(x, dim=1))
        y = target.long()
        column = y.unsqueeze(1)
        p_y = probs.gather(1, column).squeeze(1)
        brier = torch.linalg.vecdot(probs, probs).sub_(p_y, alpha=2).add_(1)  # sum_c (p_c - [y = c])**2
        scratch = is_probs is False and not per_class  # probs is ours and not needed after this
        top, right = _top_label(probs, y, column, p_y, branch, scratch)
        confidence = top.float()  # torchmetrics bins the top-label confidence in float32
        correct = right.to(confidence.dtype)
        nll = _multiclass_nll(x, column, p_y, is_probs, branch)
        class_correct = None
        if per_class:
            classes = torch.arange(probs.shape[1], device=probs.device)
            class_correct = (column == classes).to(probs.dtype)
        return _Batch(confidence, correct, finite, brier, nll, nonfinite, probs if per_class else None,
                      class_correct, finite, preds.shape[0])
    probs = _select(is_probs, lambda: x, lambda: torch.sigmoid(x))
    y = target.to(probs.dtype)
    nll = _binary_nll(x, y, probs, is_probs)
    weight = None if finite is None else (finite if task == "binary" else finite[:, None].expand_as(probs))
    return _Batch(
        probs.flatten(), y.flatten(), None if weight is None else weight.flatten(),
        (probs - y).square().flatten(), nll.flatten(), nonfinite, probs if per_class else None,
        y if per_class else None, finite, preds.shape[0],
    )


# ----------------------------------------------------------------------------------------------- state


def _make_generator(device: torch.device, seed: int) -> torch.Generator:
    try:
        generator = torch.Generator(device=device)
    except RuntimeError:  # a device without its own generator: draw on the CPU and copy
        generator = torch.Generator()
    generator.manual_seed(seed ^ _RESERVOIR_SALT)
    return generator


def calibration_state(
    n_bins: int,
    num_classes: int | None = None,
    per_class: bool = False,
    adaptive_sample: int = 100_000,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> CalibrationState:
    """An empty streaming calibration state.

    Memory is O(``n_bins`` x ``num_classes`` + ``adaptive_sample``) whatever the number of predictions (the
    reservoir buffer grows with the stream until it reaches ``2 * adaptive_sample`` rows of 12 bytes).

    The equal-mass ECE (``ace``) needs the confidences themselves, so the state keeps a bounded uniform
    sample of (confidence, outcome) pairs: every prediction from a finite row gets a uniform random key from
    the state's own ``torch.Generator`` (seeded with ``seed`` XOR a fixed salt, so that it never replays a
    generator of yours seeded with the same number; the global RNG is never touched), and the sample is the
    ``adaptive_sample`` predictions with the smallest keys (reservoir sampling by random keys). The same seed
    and the same batches in the same order give the same sample on the same kind of device. The buffer grows
    with the stream up to ``2 * adaptive_sample`` predictions; when it is full their keys are drawn in one go
    and it is cut back to the smallest, so an update is one copy and costs O(batch) amortised. Under DDP give
    every rank its own ``seed`` (e.g. ``seed + rank``): equal seeds draw equal keys.

    Args:
        n_bins: Number of equal-width bins on ``[0, 1]``.
        num_classes: Number of classes (multiclass) or labels (multilabel); required with ``per_class``. When
            given, updates check ``preds.shape[1]`` against it.
        per_class: Also keep one-vs-rest bins per class (class ``c``'s probability against ``target == c``;
            per label for multilabel), for ``per_class_ece``.
        adaptive_sample: Size of the reservoir sample for the equal-mass ECE; 0 keeps none (``ace`` is NaN).
        device: Where the tensors start; None for the CPU. An empty state follows the preds of its first
            update to their device (and re-seeds its generator there).
        seed: Seed of the reservoir's generator.

    Returns:
        A :class:`CalibrationState`.

    Raises:
        ValueError: If an argument is out of range, or ``per_class`` is set without ``num_classes``.

    Example:
        >>> state = calibration_state(n_bins=10, num_classes=3, per_class=True, adaptive_sample=1000)
        >>> tuple(state.bins.shape), tuple(state.class_bins.shape)
        ((11, 5), (3, 11, 3))
    """
    check_positive_int("n_bins", n_bins)
    if num_classes is not None:
        check_positive_int("num_classes", num_classes)
    if not isinstance(per_class, bool):
        raise TypeError(expected("per_class", "a bool", per_class))
    if per_class and num_classes is None:
        raise ValueError(expected("num_classes", "an integer larger than 0 when `per_class=True`",
                                  num_classes))
    check_non_negative_int("adaptive_sample", adaptive_sample)
    check_non_negative_int("seed", seed)
    dev = torch.device("cpu") if device is None else torch.device(device)
    state = CalibrationState(
        n_bins=n_bins,
        bins=torch.zeros(n_bins + 1, 5, dtype=_F64, device=dev),
        nonfinite=torch.zeros((), dtype=_F64, device=dev),
        class_bins=torch.zeros(num_classes, n_bins + 1, 3, dtype=_F64, device=dev) if per_class else None,  # type: ignore[arg-type]
        sample=torch.zeros(0, 3, dtype=torch.float32, device=dev),
        adaptive_sample=adaptive_sample,
        seed=seed,
        generator=_make_generator(dev, seed) if adaptive_sample else None,
        num_classes=num_classes,
    )
    return state


def _to_device(state: CalibrationState, device: torch.device) -> None:
    if state.device == device:
        return
    state.bins, state.nonfinite = state.bins.to(device), state.nonfinite.to(device)
    state.sample = state.sample.to(device)
    if state.class_bins is not None:
        state.class_bins = state.class_bins.to(device)
    state.edges_cache.clear()
    if state.generator is not None and state.seen == 0:
        state.generator = _make_generator(device, state.seed)


def _pending_keys(state: CalibrationState, generator: torch.Generator) -> Tensor:
    """Uniform keys for the buffered predictions still without one; ``inf`` for non-finite ones (NaN)."""
    pending = state.sample[state.sample_keyed:state.sample_fill, 1]
    keys = torch.rand(pending.shape[0], generator=generator, device=generator.device)
    if keys.device != pending.device:
        keys = keys.to(pending.device)
    return torch.where(torch.isnan(pending), torch.inf, keys)


def _key_pending(state: CalibrationState) -> None:
    if state.generator is not None and state.sample_keyed < state.sample_fill:
        state.sample[state.sample_keyed:state.sample_fill, 0] = _pending_keys(state, state.generator)
        state.sample_keyed = state.sample_fill


def _smallest_keys(rows: Tensor, count: int) -> Tensor:
    return rows.index_select(0, torch.topk(rows[:, 0], count, largest=False, sorted=False).indices)


def _compact(state: CalibrationState, exact: bool = False) -> None:
    """Key the waiting predictions, then cut the buffer back to (about) the ``k = adaptive_sample`` smallest.

    The exact cut is a ``topk``. On the CPU a cheaper cut is tried first: the keys are uniform, so after
    ``n`` predictions about ``t * n`` of them lie below ``t``; with ``t`` six standard deviations above
    ``k / n``, the rows with keys ``<= t`` number at least ``k`` (else, about once in 1e9, the ``topk`` runs)
    and so hold the ``k`` smallest. ``sample_threshold`` remembers ``t``: every key of the stream up to it is
    still in the buffer, so later cuts never raise it.
    """
    _key_pending(state)
    rows, k = state.sample[:state.sample_fill], state.adaptive_sample
    if rows.shape[0] > k:
        cut = None
        if not exact and rows.device.type == "cpu" and state.sample_pushed:
            threshold = min(state.sample_threshold, (k + 6 * math.sqrt(k) + 16) / state.sample_pushed)
            keep = (rows[:, 0] <= threshold).nonzero().squeeze(1)
            if k <= keep.shape[0] < rows.shape[0]:
                cut, state.sample_threshold = rows.index_select(0, keep), threshold
        if cut is None:
            cut = _smallest_keys(rows, k)
            if rows.device.type == "cpu":
                state.sample_threshold = min(state.sample_threshold, float(cut[:, 0].max()))
        rows = cut
    state.sample[:rows.shape[0]] = rows
    state.sample_fill = state.sample_keyed = rows.shape[0]


def _reserve(state: CalibrationState, count: int) -> None:
    """Make room for ``count <= adaptive_sample`` more rows: grow the buffer up to its limit, else cut it."""
    need, size = state.sample_fill + count, state.sample.shape[0]
    if need <= size:
        return
    limit = 2 * state.adaptive_sample
    if size < limit:
        grown = state.sample.new_zeros(min(limit, max(need, 2 * size)), 3)
        grown[:state.sample_fill] = state.sample[:state.sample_fill]
        state.sample = grown
        if need <= grown.shape[0]:
            return
    _compact(state)
    if state.sample_fill + count > state.sample.shape[0]:
        _compact(state, exact=True)


def _reservoir_extend(state: CalibrationState, rows: Tensor) -> None:
    """Append keyed ``(m, 3)`` rows (key, confidence, outcome) to the buffer, cutting it when full."""
    _key_pending(state)
    step = state.adaptive_sample  # a cut always frees this many rows
    for start in range(0, rows.shape[0], step):
        chunk = rows[start:start + step]
        _reserve(state, chunk.shape[0])
        state.sample[state.sample_fill:state.sample_fill + chunk.shape[0]] = chunk
        state.sample_fill = state.sample_keyed = state.sample_fill + chunk.shape[0]
        state.sample_pushed += chunk.shape[0]


def _reservoir_push(
    state: CalibrationState, confidence: Tensor, correct: Tensor, weight: Tensor | None
) -> None:
    """Buffer new predictions (a non-finite one as NaN); their random keys are drawn in bulk at the next cut.

    The buffer grows with the stream up to ``2 * adaptive_sample`` predictions and is then cut back to the
    ``adaptive_sample`` smallest keys whenever it is full, so each prediction costs O(1) amortised and an
    update is a single copy.
    """
    count, step = confidence.shape[0], state.adaptive_sample  # a cut always frees `step` rows
    if count > step:  # in pieces
        for start in range(0, count, step):
            part = slice(start, start + step)
            _reservoir_push(state, confidence[part], correct[part], None if weight is None else weight[part])
        return
    _reserve(state, count)
    if weight is not None:
        confidence = torch.where(weight, confidence, torch.nan)
    confidence = confidence.float()
    # the key column gets a placeholder (the confidence) until the next cut draws the keys
    rows = state.sample.narrow(0, state.sample_fill, count)
    torch.stack((confidence, confidence, correct.float()), dim=1, out=rows)
    state.sample_fill += count
    state.sample_pushed += count


def _bin_index(state: CalibrationState, confidence: Tensor) -> Tensor:
    """torchmetrics' bin of each confidence: ``bucketize(c, linspace(0, 1, n_bins + 1), right=True) - 1``.

    Computed as ``bucketize(c, boundaries[1:], right=True)``, the same for every ``c >= 0`` (the dropped
    boundary 0 is always ``<= c``), with the boundaries in ``c``'s dtype and cached on the state.
    """
    dtype = confidence.dtype
    if dtype not in state.edges_cache:
        edges = torch.linspace(0, 1, state.n_bins + 1, dtype=dtype, device=state.device)
        state.edges_cache[dtype] = edges[1:].contiguous()
    return torch.bucketize(confidence, state.edges_cache[dtype], right=True)


def _bin_add(bins: Tensor, index: Tensor, columns: tuple[Tensor, ...], weight: Tensor | None) -> None:
    """Scatter rows ``(1, *columns)`` into the float64 table ``bins``; weight False leaves one out."""
    rows = torch.stack((torch.ones_like(columns[0]),) + columns, dim=1)
    if weight is not None:
        rows = rows * weight[:, None]
    bins.index_add_(0, index, rows.to(_F64))


def _calibration_update(state: CalibrationState, batch: _Batch) -> None:
    """Add one formatted batch to the state, in place; no device sync."""
    _to_device(state, batch.confidence.device)
    confidence, weight = batch.confidence, batch.weight
    columns = (confidence, batch.correct, batch.brier, batch.nll)
    if batch.brier.dtype != confidence.dtype:  # float64 multiclass preds: keep the float64 losses
        dtype = torch.promote_types(confidence.dtype, batch.brier.dtype)
        columns = tuple(c.to(dtype) for c in columns)
    _bin_add(state.bins, _bin_index(state, confidence), columns, weight)
    if weight is not None:
        state.nonfinite += batch.nonfinite
    if state.class_bins is not None and batch.class_prob is not None and batch.class_correct is not None:
        prob, slots = batch.class_prob, state.n_bins + 1
        offset = torch.arange(prob.shape[1], device=prob.device) * slots
        index = (_bin_index(state, prob) + offset).flatten()
        rows = None if batch.row_weight is None else batch.row_weight[:, None].expand_as(prob).flatten()
        _bin_add(state.class_bins.view(-1, 3), index, (prob.flatten(), batch.class_correct.flatten()), rows)
    if state.generator is not None:
        _reservoir_push(state, confidence, batch.correct, weight)
    state.seen += batch.rows


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

    Args:
        state: From :func:`calibration_state`.
        preds: ``(N,)`` for binary, ``(N, C)`` for multiclass, ``(N, L)`` for multilabel; float.
        target: ``(N,)`` of 0/1 (binary), ``(N,)`` of class indices (multiclass), ``(N, L)`` of 0/1
            (multilabel).
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``; the same for every update of one state.
        input: ``"probs"``, ``"logits"`` or ``"auto"`` (see the module docstring).
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
    _calibration_check(preds, target, task, input, state.num_classes)
    if state.task is not None and task != state.task:
        raise ValueError(expected("task", f"{state.task!r}, the task of this state's earlier updates", task))
    if state.per_class and task == "binary":
        raise ValueError(expected("task", "'multiclass' or 'multilabel' for a state with `per_class=True`",
                                  task))
    if validate_args:
        _calibration_check_values(preds, target, task, input)
    _calibration_update(state, _calibration_format(preds, target, task, input, per_class=state.per_class))
    state.task = task
    return state


# ----------------------------------------------------------------------------------------------- merge


def _check_compatible(a: CalibrationState, b: CalibrationState) -> None:
    for name in ("n_bins", "adaptive_sample", "num_classes", "per_class"):
        if getattr(a, name) != getattr(b, name):
            raise ValueError(expected("b", f"a state with {name}={getattr(a, name)!r} like `a`",
                                      getattr(b, name)))
    if a.task is not None and b.task is not None and a.task != b.task:
        raise ValueError(expected("b", f"a state of task {a.task!r} like `a`", b.task))


def calibration_merge(a: CalibrationState, b: CalibrationState) -> CalibrationState:
    """A new state holding the statistics of both ``a`` and ``b`` (on ``a``'s device); neither is changed.

    The bins, Brier and NLL sums and counts add up exactly. The reservoir keeps the ``adaptive_sample``
    smallest keys of both samples, which is again a uniform sample of the union -- but not the one a single
    stream over the same data would have drawn, since the two states drew their own keys; and if ``a`` and
    ``b`` share a seed and batch sizes their keys coincide, so seed them differently. ``ace`` after a merge is
    therefore an estimate; everything else is exact.

    Args:
        a: A state.
        b: A state with the same ``n_bins``, ``num_classes``, ``per_class``, ``adaptive_sample`` (and task).

    Returns:
        The merged :class:`CalibrationState`; its generator continues from ``a``'s.

    Raises:
        ValueError: If the two states are not compatible.

    Example:
        >>> a = calibration_update(calibration_state(2, adaptive_sample=0), torch.tensor([0.2, 0.9]),
        ...                        torch.tensor([0, 1]), "binary")
        >>> b = calibration_update(calibration_state(2, adaptive_sample=0), torch.tensor([0.7]),
        ...                        torch.tensor([0]), "binary")
        >>> calibration_merge(a, b).counts
        tensor([1., 2., 0.], dtype=torch.float64)
    """
    if not isinstance(a, CalibrationState):
        raise TypeError(expected("a", "a CalibrationState", type(a).__name__))
    if not isinstance(b, CalibrationState):
        raise TypeError(expected("b", "a CalibrationState", type(b).__name__))
    _check_compatible(a, b)
    device = a.device
    generator = None
    if a.generator is not None:
        generator = torch.Generator(device=a.generator.device)
        generator.set_state(a.generator.get_state())
    out = CalibrationState(
        n_bins=a.n_bins,
        bins=a.bins + b.bins.to(device),
        nonfinite=a.nonfinite + b.nonfinite.to(device),
        class_bins=None if a.class_bins is None else a.class_bins + b.class_bins.to(device),  # type: ignore[union-attr]
        sample=a.sample.clone(),
        sample_fill=a.sample_fill,
        sample_keyed=a.sample_keyed,
        sample_pushed=a.sample_pushed,
        sample_threshold=min(a.sample_threshold, b.sample_threshold),
        adaptive_sample=a.adaptive_sample,
        seed=a.seed,
        generator=generator,
        num_classes=a.num_classes,
        task=a.task if a.task is not None else b.task,
        seen=a.seen + b.seen,
    )
    if b.sample_fill:
        _reservoir_extend(out, _keyed_rows(b).to(device))
    out.sample_pushed = a.sample_pushed + b.sample_pushed
    return out


def state_tensors(state: CalibrationState) -> list[Tensor]:
    """The state's summable tensors, in a fixed order, for an all-reduce with ``sum`` across processes.

    They are the state's own float64 tensors (not copies): ``bins``, ``nonfinite`` and, with ``per_class``,
    ``class_bins``. The reservoir sample is not summable and stays per-process (gather the states and combine
    them with :func:`calibration_merge` if a global ``ace`` is wanted).

    Args:
        state: A :class:`CalibrationState`.

    Returns:
        List of tensors; write reduced copies back with :func:`state_from_tensors`.

    Example:
        >>> state = calibration_state(n_bins=3, adaptive_sample=0)
        >>> [tuple(t.shape) for t in state_tensors(state)]
        [(4, 5), ()]
    """
    return [state.bins, state.nonfinite] + ([state.class_bins] if state.class_bins is not None else [])


def state_from_tensors(state: CalibrationState, tensors: Sequence[Tensor]) -> CalibrationState:
    """Write ``tensors`` (shaped like :func:`state_tensors` of ``state``) back into ``state``, in place.

    Args:
        state: The state to overwrite.
        tensors: The (reduced) tensors, in the order of :func:`state_tensors`.

    Returns:
        ``state``.

    Raises:
        ValueError: If the number or shapes of ``tensors`` do not match.

    Example:
        >>> state = calibration_state(n_bins=1, adaptive_sample=0)
        >>> reduced = [t + 1 for t in state_tensors(state)]  # e.g. after all_reduce
        >>> state_from_tensors(state, reduced).counts
        tensor([1., 1.], dtype=torch.float64)
    """
    own = state_tensors(state)
    shapes = [tuple(t.shape) for t in own]
    given = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in tensors]
    if given != shapes:
        raise ValueError(expected("tensors", f"tensors shaped {shapes} like state_tensors(state)", given))
    for mine, theirs in zip(own, tensors):
        mine.copy_(theirs)
    return state


# ----------------------------------------------------------------------------------------------- compute


def _bin_errors(counts: Tensor, confidence_sum: Tensor, correct_sum: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ECE, MCE, RMSCE over the last dimension, as torchmetrics' ``_ce_compute``; NaN where no predictions."""
    total = counts.sum(dim=-1)
    accuracy = torch.nan_to_num(correct_sum / counts)
    confidence = torch.nan_to_num(confidence_sum / counts)
    gap = (accuracy - confidence).abs()
    share = counts / total.unsqueeze(-1)
    ece = (gap * share).sum(dim=-1)
    mce = gap.amax(dim=-1)
    rmsce = (gap.square() * share).sum(dim=-1).sqrt()
    empty = total == 0
    nan = torch.full_like(ece, torch.nan)
    return torch.where(empty, nan, ece), torch.where(empty, nan, mce), torch.where(empty, nan, rmsce)


def _keyed_rows(state: CalibrationState) -> Tensor:
    """The buffered ``(m, 3)`` rows, the waiting ones keyed from a copy of the generator (state unchanged).

    The copy draws the very keys the next cut will draw for them (the generator fills a range the same way
    whether it is drawn at once or in parts).
    """
    rows = state.sample[:state.sample_fill]
    if state.generator is None or state.sample_keyed == state.sample_fill:
        return rows
    generator = torch.Generator(device=state.generator.device)
    generator.set_state(state.generator.get_state())
    rows = rows.clone()
    rows[state.sample_keyed:, 0] = _pending_keys(state, generator)
    return rows


def _sample(state: CalibrationState) -> tuple[Tensor, Tensor]:
    """The reservoir sample: (confidence, outcome) of the ``adaptive_sample`` smallest finite keys."""
    rows = _keyed_rows(state)
    if rows.shape[0] > state.adaptive_sample:
        rows = _smallest_keys(rows, state.adaptive_sample)
    rows = rows.index_select(0, torch.isfinite(rows[:, 0]).nonzero().squeeze(1))
    return rows[:, 1], rows[:, 2]


def _equal_mass_ece(confidence: Tensor, correct: Tensor, n_bins: int) -> Tensor:
    """ECE over ``n_bins`` bins of equal count (Nixon et al., 2019), split as ``numpy.array_split`` does.

    The predictions are sorted by confidence (stable sort); bin ``b`` weighs ``size_b / m`` and its gap is
    ``|mean(correct) - mean(confidence)|``, so the sum is ``sum_b |sum(correct) - sum(confidence)| / m``.
    """
    m = confidence.numel()
    if m == 0:
        return torch.tensor(torch.nan, dtype=_F64, device=confidence.device)
    # confidences lie in [0, 1]: as int32 their bits sort in the same order, and integers sort much faster
    keys = confidence.view(torch.int32) if confidence.dtype == torch.float32 else confidence
    order = torch.sort(keys, stable=True).indices
    conf = confidence[order].to(_F64)
    acc = correct[order].to(_F64)
    q, r = divmod(m, n_bins)
    position = torch.arange(m, device=conf.device)
    big = r * (q + 1)
    bin_id = torch.where(position < big, position // (q + 1), r + (position - big) // max(q, 1))
    diff = torch.zeros(n_bins, dtype=_F64, device=conf.device).index_add_(0, bin_id, acc - conf)
    return diff.abs().sum() / m


def _calibration_compute(state: CalibrationState) -> dict[str, Tensor]:
    dtype = torch.get_default_dtype()
    ece, mce, rmsce = _bin_errors(state.counts, state.confidence_sum, state.correct_sum)
    count = state.counts.sum()
    out = {
        "ece": ece,
        "mce": mce,
        "rmsce": rmsce,
        "ace": _equal_mass_ece(*_sample(state), state.n_bins) if state.adaptive_sample else ece * torch.nan,
        "brier": state.brier_sum / count,
        "nll": state.nll_sum / count,
        "accuracy": state.correct_sum.sum() / count,
        "confidence": state.confidence_sum.sum() / count,
    }
    if state.class_bins is not None:
        out["per_class_ece"] = _bin_errors(*state.class_bins.unbind(dim=-1))[0]
    out = {key: value.to(dtype) for key, value in out.items()}
    out["count"] = count.round().long()
    out["nonfinite"] = state.nonfinite.round().long()
    return out


def calibration_compute(state: CalibrationState) -> dict[str, Tensor]:
    """Calibration metrics from a state; the state is not changed.

    Keys (0-dim tensors in the default dtype unless noted; NaN when the state holds no prediction):

    * ``ece``, ``mce``, ``rmsce``: the l1 / max / l2 calibration errors over the equal-width bins, exactly
      torchmetrics' ``norm="l1" | "max" | "l2"``.
    * ``ace``: ECE over ``n_bins`` equal-mass bins, from the reservoir sample (exact when the sample holds
      every prediction; NaN with ``adaptive_sample=0``).
    * ``brier``: mean Brier score (multiclass: ``sum_c (p_c - [y = c])**2`` per sample; binary/multilabel:
      ``(p - y)**2`` per prediction).
    * ``nll``: mean negative log-likelihood in nats (cross-entropy for multiclass, binary cross-entropy per
      prediction otherwise). From logits it is exact; from probabilities ``log p`` is clamped at -100, as
      ``F.binary_cross_entropy`` does, so one confident mistake costs at most 100 nats.
    * ``accuracy``: mean outcome -- top-1 accuracy for multiclass, the fraction of positives for binary and
      multilabel; ``confidence``: mean confidence (mean probability of the positive class for binary and
      multilabel). Their difference is the calibration-in-the-large.
    * ``count``: int64, predictions binned (``N``, or ``N * L`` for multilabel), ``nonfinite``: int64, rows
      left out.
    * ``per_class_ece`` (only with ``per_class``): ``(C,)`` one-vs-rest l1 ECE per class (every prediction
      counts for every class, so it is NaN only before the first update).

    Args:
        state: A :class:`CalibrationState`.

    Returns:
        Dict of tensors as listed above.

    Example:
        >>> state = calibration_state(n_bins=2, adaptive_sample=0)
        >>> preds, target = torch.tensor([0.25, 0.25, 0.55, 0.75, 0.75]), torch.tensor([0, 0, 1, 1, 1])
        >>> out = calibration_compute(calibration_update(state, preds, target, "binary"))
        >>> out["ece"], out["mce"], out["count"]
        (tensor(0.2900), tensor(0.3167), tensor(5))
    """
    if not isinstance(state, CalibrationState):
        raise TypeError(expected("state", "a CalibrationState", type(state).__name__))
    return _calibration_compute(state)


# ----------------------------------------------------------------------------------------------- one-shot


def _one_shot(preds: Tensor, target: Tensor, n_bins: int, task: Any, input: Any) -> CalibrationState:
    check_positive_int("n_bins", n_bins)
    _calibration_check(preds, target, task, input)
    _calibration_check_values(preds, target, task, input)
    state = calibration_state(n_bins, adaptive_sample=0, device=preds.device)
    _calibration_update(state, _calibration_format(preds, target, task, input))
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


def _reliability_compute(state: CalibrationState) -> dict[str, Tensor]:
    """Reliability-diagram bins of a state: the exactly-1.0 slot folded into the last bin."""
    dtype = torch.get_default_dtype()
    counts = state.counts[: state.n_bins].clone()
    conf = state.confidence_sum[: state.n_bins].clone()
    correct = state.correct_sum[: state.n_bins].clone()
    counts[-1] += state.counts[-1]
    conf[-1] += state.confidence_sum[-1]
    correct[-1] += state.correct_sum[-1]
    return {
        "edges": torch.linspace(0, 1, state.n_bins + 1, dtype=dtype, device=state.device),
        "counts": counts.round().long(),
        "accuracy": (correct / counts).to(dtype),
        "confidence": (conf / counts).to(dtype),
    }


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


# ----------------------------------------------------------------------------------------------- temperature


def fit_temperature(logits: Tensor, target: Tensor, max_iter: int = 50, task: Task | None = None) -> float:
    """Temperature scaling (Guo et al., 2017): the ``T > 0`` minimising the NLL of ``logits / T``.

    LBFGS (strong-Wolfe line search) on ``log T`` from ``T = 1``, in float64, on a detached clone of the
    inputs: no model is touched and the caller's tensors keep no graph. It leaves inference mode and enables
    gradients itself, so it can be called from Lightning's validation hooks. Multiclass logits use softmax,
    binary and multilabel logits sigmoid. Rows with NaN or infinities are left out. Divide the logits by the
    returned ``T`` to calibrate them (``T > 1``: the model was over-confident).

    Args:
        logits: ``(N,)`` (binary), ``(N, C)`` (multiclass) or ``(N, L)`` (multilabel) logits.
        target: ``(N,)`` 0/1, ``(N,)`` class indices or ``(N, L)`` 0/1.
        max_iter: Most LBFGS iterations.
        task: The task; None infers it from the shapes: ``(N,)`` binary, ``(N, C)`` with ``(N,)`` targets
            multiclass, ``(N, L)`` with ``(N, L)`` targets multilabel.

    Returns:
        The temperature ``T`` as a Python float.

    Raises:
        TypeError: If ``logits``/``target`` are not tensors of the right kind.
        ValueError: If shapes or values are invalid, or no row is finite.

    Example:
        >>> logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])
        >>> target = torch.tensor([0, 1, 1, 0])  # half wrong at high confidence: T grows
        >>> fit_temperature(logits, target) > 5.0
        True
    """
    check_positive_int("max_iter", max_iter)
    if task is None and isinstance(logits, Tensor) and isinstance(target, Tensor):
        same_shape = target.shape == logits.shape
        task = "binary" if logits.ndim == 1 else ("multilabel" if same_shape else "multiclass")
    _calibration_check(logits, target, task, "logits")
    _calibration_check_values(logits, target, task, "logits")  # type: ignore[arg-type]
    with torch.inference_mode(False), torch.enable_grad():
        dtype = torch.float32 if logits.device.type == "mps" else _F64
        finite = _finite_rows(logits)
        z = logits.detach().clone()[finite].to(dtype)
        y = target.detach().clone().to(logits.device)[finite]
        if z.shape[0] == 0:
            raise ValueError(expected("logits", "a tensor with at least one finite row", tuple(logits.shape)))
        y = y.long() if task == "multiclass" else y.to(dtype)
        log_t = torch.zeros((), dtype=dtype, device=z.device, requires_grad=True)

        def loss() -> Tensor:
            scaled = z / log_t.exp()
            if task == "multiclass":
                return F.cross_entropy(scaled, y)
            return F.binary_cross_entropy_with_logits(scaled, y)

        optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            value = loss()
            (log_t.grad,) = torch.autograd.grad(value, log_t)
            return value.detach()

        optimizer.step(closure)
        temperature = float(log_t.detach().exp())
    if not 0.0 < temperature < float("inf"):
        raise ValueError(expected("logits", "logits with a finite optimal temperature", temperature))
    return temperature
