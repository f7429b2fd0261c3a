"""Binning: the pending per-prediction rows of a calibration state into its bins and its reservoir.

Pure torch. The update (``_update``) queues rows in the state's pending buffer; :func:`_flush` bins them with one
``bucketize`` and one ``index_add_`` and offers them to the reservoir, and :func:`_settle` does so before every
read (``CalibrationState.bins`` and the readers).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from lightning_xai.functional.calibration._common import _F64, _StateData
from lightning_xai.functional.calibration._reservoir import _reservoir_offer

__all__: list[str] = []


def _bin_index(state: _StateData, confidence: Tensor) -> Tensor:
    """torchmetrics' bin of each confidence: ``bucketize(c, linspace(0, 1, n_bins + 1), right=True) - 1``.

    Computed as ``bucketize(c, boundaries[1:], right=True)``, the same for every ``c >= 0`` (the dropped
    boundary 0 is always ``<= c``), with the boundaries in ``c``'s dtype and cached on the state.
    """
    key = ("edges", confidence.dtype)
    if key not in state.cache:
        edges = torch.linspace(0, 1, state.n_bins + 1, dtype=confidence.dtype, device=state.device)
        state.cache[key] = edges[1:].contiguous()
    return torch.bucketize(confidence, state.cache[key], right=True)


def _bin_add(bins: Tensor, index: Tensor, columns: tuple[Tensor, ...], weight: Tensor | None) -> None:
    """Scatter rows ``(1, *columns)`` into the float64 table ``bins``; weight False leaves one out."""
    rows = torch.stack((torch.ones_like(columns[0]),) + columns, dim=1)
    if weight is not None:
        rows = rows * weight[:, None]
    bins.index_add_(0, index, rows.to(_F64))


def _bin_rows(state: _StateData, columns: Tensor, bin_dtype: torch.dtype, weighted: bool) -> None:
    """Bin ``(5, m)`` columns ``(weight, confidence, outcome, Brier, NLL)`` and offer them to the reservoir.

    The confidences are binned in ``bin_dtype``, the dtype they were computed in (exact: the columns hold them
    in that dtype or a wider one). The sums run over columns (an ``index_add_`` along a contiguous dimension is
    about twice as fast as along rows of five).
    """
    confidence = columns[1]
    index = _bin_index(state, confidence if confidence.dtype == bin_dtype else confidence.to(bin_dtype))
    weight = columns[0]
    source = (columns * weight if weighted else columns).to(_F64)
    sums = torch.zeros(5, state.n_bins + 1, dtype=_F64, device=source.device).index_add_(1, index, source)
    state.table.add_(sums.T)
    if state.generator is not None:
        _reservoir_offer(state, confidence, columns[2], weight > 0 if weighted else None)


def _flush(state: _StateData) -> None:
    """Bin the pending rows, if any; column 0 (the weights) is left all ones again."""
    fill, state.pending_fill = state.pending_fill, 0
    if fill:
        columns = state.pending[:, :fill]  # type: ignore[index]
        _bin_rows(state, columns, state.pending_dtype, state.pending_weighted)  # type: ignore[arg-type]
        if state.pending_weighted:
            columns[0] = 1
    state.pending_weighted = False


def _inference_needed(state: _StateData) -> bool:
    """Whether tensors of the state were made under ``torch.inference_mode`` and we are outside it now.

    Such tensors can only be written to inside inference mode, so state changes then run inside it (Lightning
    updates a state in its validation loop, which runs in inference mode; a user may read it later outside).
    """
    if torch.is_inference_mode_enabled():
        return False
    for tensor in (state.pending, state.table, state.sample, state.nonfinite, state.class_bins):
        if tensor is not None and tensor.is_inference():
            return True
    return False


def _settle(state: _StateData) -> None:
    """Bin the pending rows before a read (see :func:`_inference_needed`)."""
    if not state.pending_fill:
        return
    with torch.inference_mode() if _inference_needed(state) else contextlib.nullcontext():
        _flush(state)
