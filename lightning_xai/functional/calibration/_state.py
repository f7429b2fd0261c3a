"""The streaming calibration state: its dataclass and its constructor (the constants every step shares are in
``_common``).

Pure torch. See :mod:`lightning_xai.functional.calibration` for what the statistics mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected
from lightning_xai.functional.calibration._binning import _settle
from lightning_xai.functional.calibration._common import _F64, _make_generator, _StateData

__all__ = ["CalibrationState", "calibration_state"]


@dataclass(eq=False)
class CalibrationState(_StateData):
    """Running calibration statistics; create it with :func:`calibration_state`.

    Every tensor lives on one device (the preds' device after the first update). The summable statistics are
    packed into float64 tensors so that binning is one scatter per table and a DDP reduction two or three
    all-reduces (see :func:`state_tensors`); counts are exact up to 2**53. Per-bin tables have ``n_bins + 1``
    slots: the last holds confidences of exactly 1.0 (see the module docstring of
    :mod:`lightning_xai.functional.calibration`). Named properties such as :attr:`counts` read the packed columns.

    An update appends its per-prediction values (weight, confidence, outcome, Brier, NLL) to a small buffer and
    bins them ``8192`` at a time, which makes the per-batch cost a single copy; :attr:`bins` and every reader
    (:func:`calibration_compute`, :func:`state_tensors`, :func:`calibration_merge`) fold the waiting
    predictions in first, so no reader ever sees a partial table.

    Attributes:
        n_bins: Number of equal-width bins on ``[0, 1]``.
        table: The binned part of :attr:`bins` (without the waiting predictions); read :attr:`bins` instead.
        bins: ``(n_bins + 1, 5)`` float64 (a property: waiting predictions are binned first); per bin, the
            number of predictions and the sums of their confidences, outcomes (top label right for multiclass,
            the 0/1 target for binary/multilabel), Brier scores and negative log-likelihoods (nats). Brier and
            NLL thus also split by confidence.
        nonfinite: ``()`` float64, rows of ``preds`` left out for holding a NaN or an infinity.
        class_bins: ``(C, n_bins + 1, 3)`` float64 one-vs-rest bins per class (per label for multilabel):
            count, confidence sum, outcome sum; None unless ``per_class``.
        pending: ``(5, R)`` buffer of predictions waiting to be binned, one column each (allocated at the
            first update), or None.
        pending_fill: Columns of ``pending`` in use.
        pending_dtype: The dtype the waiting confidences are binned in (torchmetrics' bins depend on it).
        pending_weighted: Whether a waiting prediction may have weight 0 (from a non-finite row).
        sample: ``(S, 3)`` float32 reservoir buffer, one row per kept prediction, growing with the stream up to
            ``S = 2 * adaptive_sample``; columns: uniform random key (``inf`` for a non-finite prediction),
            confidence, outcome.
        sample_fill: Rows of ``sample`` in use.
        sample_pushed: Predictions offered to the reservoir so far (each drew one key).
        sample_threshold: On the CPU, every key of the stream up to this value is still in the buffer
            (``inf`` before the first cut); predictions with larger keys are dropped on arrival.
        adaptive_sample: Size of the reservoir sample used for the equal-mass ECE (0: none).
        seed: Seed of ``generator``.
        generator: The reservoir's own ``torch.Generator`` (never the global one), or None.
        num_classes: Number of classes/labels if fixed, else None.
        task: The task of the first update (later updates must match), or None.
        seen: Rows passed to :func:`calibration_update` on this process (a Python int: no device sync).
        input_mismatch: The first contradiction an update found between its declared ``input`` and the data
            (e.g. ``input="logits"`` on rows that are distributions), as a message, or None; the functional
            update warns when it is first set, so once per state.

    Example:
        >>> state = calibration_state(n_bins=4, adaptive_sample=0)
        >>> tuple(state.bins.shape), tuple(state.counts.shape), state.counts.dtype
        ((5, 5), (5,), torch.float64)
    """

    @property
    def bins(self) -> Tensor:
        """``(n_bins + 1, 5)`` float64 table (see the class docstring), waiting predictions binned first."""
        if self.pending_fill:
            _settle(self)
        return self.table

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


def calibration_state(
    n_bins: int,
    num_classes: int | None = None,
    per_class: bool = False,
    adaptive_sample: int = 100_000,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> CalibrationState:
    """An empty streaming calibration state.

    Memory is O(``n_bins`` x ``num_classes`` + ``adaptive_sample``) whatever the number of predictions: the
    reservoir buffer grows with the stream until it reaches ``2 * adaptive_sample`` rows of 12 bytes, and 8192
    predictions wait in a 160 KiB buffer to be binned together.

    The equal-mass ECE (``ace``) needs the confidences themselves, so the state keeps a bounded uniform
    sample of (confidence, outcome) pairs: every prediction from a finite row gets a uniform random key from
    the state's own ``torch.Generator`` (seeded with ``seed`` XOR a fixed salt, so that it never replays a
    generator of yours seeded with the same number; the global RNG is never touched), and the sample is the
    ``adaptive_sample`` predictions with the smallest keys (reservoir sampling by random keys). The same seed
    and the same batches in the same order give the same sample on the same kind of device. Keys are drawn
    8192 at a time; the buffer grows with the stream up to ``2 * adaptive_sample`` predictions and is cut back
    to the smallest keys when full. On the CPU a prediction whose key is above the largest one that can still
    make the sample is dropped on arrival, so after ``n`` predictions only about ``adaptive_sample / n`` of a
    batch is copied, and cuts are rare (about ``log2(n / adaptive_sample)`` of them). Under DDP give every
    rank its own ``seed`` (e.g. ``seed + rank``): equal seeds draw equal keys.

    Args:
        n_bins: Number of equal-width bins on ``[0, 1]``.
        num_classes: Number of classes (multiclass) or labels (multilabel); required with ``per_class``. When
            given, updates check ``preds.shape[1]`` against it.
        per_class: Also keep one-vs-rest bins per class (class ``c``'s probability against ``target == c``;
            per label for multilabel), for ``per_class_ece``.
        adaptive_sample: Size of the reservoir sample for the equal-mass ECE; 0 keeps none (``ace`` is NaN,
            and updates are cheaper).
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
    return CalibrationState(
        n_bins=n_bins,
        table=torch.zeros(n_bins + 1, 5, dtype=_F64, device=dev),
        nonfinite=torch.zeros((), dtype=_F64, device=dev),
        class_bins=(torch.zeros(num_classes, n_bins + 1, 3, dtype=_F64, device=dev)  # type: ignore[arg-type]
                    if per_class else None),
        sample=torch.zeros(0, 3, dtype=torch.float32, device=dev),
        adaptive_sample=adaptive_sample,
        seed=seed,
        generator=_make_generator(dev, seed) if adaptive_sample else None,
        num_classes=num_classes,
    )
