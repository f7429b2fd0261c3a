"""Calibration metrics from a state: ECE/MCE/RMSCE over equal-width bins, ACE over equal-mass bins of the
reservoir sample, Brier, NLL, accuracy and mean confidence, and the bins a reliability diagram plots.

Pure torch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.functional.calibration._binning import _settle
from lightning_xai.functional.calibration._common import _F64
from lightning_xai.functional.calibration._reservoir import _reservoir_rows
from lightning_xai.functional.calibration._state import CalibrationState, calibration_state  # noqa: F401
from lightning_xai.functional.calibration._update import calibration_update  # noqa: F401  (examples)

__all__ = ["calibration_compute"]


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


def _sample(state: CalibrationState) -> tuple[Tensor, Tensor]:
    """The reservoir sample: (confidence, outcome) of the ``adaptive_sample`` smallest finite keys."""
    _settle(state)
    rows = _reservoir_rows(state)
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
    _settle(state)
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
    """Calibration metrics from a state; its statistics are not changed (waiting predictions are binned).

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




def _folded_bins(state: CalibrationState) -> tuple[Tensor, Tensor, Tensor]:
    """Float64 count, confidence sum and outcome sum per bin, the exactly-1.0 slot folded into the last bin."""
    _settle(state)
    table = state.bins[:, :3]
    folded = table[: state.n_bins].clone()
    folded[-1] += table[-1]
    return folded.unbind(dim=1)


def _reliability_compute(state: CalibrationState) -> dict[str, Tensor]:
    """Reliability-diagram bins of a state: the exactly-1.0 slot folded into the last bin."""
    dtype = torch.get_default_dtype()
    counts, conf, correct = _folded_bins(state)
    return {
        "edges": torch.linspace(0, 1, state.n_bins + 1, dtype=dtype, device=state.device),
        "counts": counts.round().long(),
        "accuracy": (correct / counts).to(dtype),
        "confidence": (conf / counts).to(dtype),
    }


def _number(value: Tensor | float) -> float | int | None:
    """A JSON value: None for NaN or an infinity (not JSON), an int for an integer tensor."""
    if isinstance(value, Tensor) and not (value.is_floating_point() or value.is_complex()):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _calibration_summary(state: CalibrationState, metrics: dict[str, Tensor]) -> dict[str, Any]:
    """What ``calibration.json`` holds: the bins of a state and its metrics, as JSON-valid Python values.

    * ``counts``, ``accuracy``, ``confidence``: ``n_bins`` entries, torchmetrics' equal-width bins
      ``[k/n, (k+1)/n)`` with the last one closed (``[1 - 1/n, 1]``, as :func:`reliability_bins` and the
      diagram have it); ``accuracy`` is the mean outcome of the bin (top label right for multiclass, the
      fraction of positives otherwise), ``confidence`` the mean confidence; both ``None`` for an empty bin.
      ``edges``: the ``n_bins + 1`` boundaries.
    * ``at_one``: the part of the last bin with a confidence of exactly 1.0 (``count``, ``accuracy``), which
      torchmetrics scores as a bin of its own: with it, ECE/MCE/RMSCE recomputed from the file equal
      torchmetrics'.
    * ``metrics``: the overall values of :func:`calibration_compute` (``ece``, ``mce``, ``rmsce``, ``ace``,
      ``brier``, ``nll``, ``accuracy``, ``confidence``, ``count``, ``nonfinite``, ``per_class_ece`` when kept),
      ``None`` where NaN.
    """
    counts, conf, correct = _folded_bins(state)
    ones, ones_correct = (float(v) for v in state.bins[state.n_bins, [0, 2]])

    def mean(sums: Tensor) -> list[float | None]:
        return [_number(s / n) if n else None for s, n in zip(sums.tolist(), counts.tolist())]

    out_metrics: dict[str, Any] = {}
    for key, value in metrics.items():
        out_metrics[key] = [_number(v) for v in value] if value.dim() else _number(value)
    return {
        "task": state.task,
        "n_bins": state.n_bins,
        "edges": torch.linspace(0, 1, state.n_bins + 1, dtype=_F64).tolist(),
        "counts": [round(c) for c in counts.tolist()],
        "accuracy": mean(correct),
        "confidence": mean(conf),
        "at_one": {"count": round(ones), "accuracy": ones_correct / ones if ones else None},
        "metrics": out_metrics,
    }
