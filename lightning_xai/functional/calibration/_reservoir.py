"""The bounded reservoir sample behind the equal-mass ECE: every prediction draws a random key, the smallest stay.

Pure torch. A prediction offered to the reservoir draws a uniform key from the state's own generator (a
non-finite one gets ``inf``); the sample is the ``adaptive_sample`` rows with the smallest keys, which is a
uniform sample without replacement of the stream. Rows go to a buffer of at most ``2 * adaptive_sample`` rows
that is cut back to (about) the smallest ``adaptive_sample`` keys whenever it is full. On the CPU the cut also
lowers a key threshold below which every key of the stream is still in the buffer, and later predictions with
larger keys are dropped on arrival: after ``n`` predictions only about ``adaptive_sample / n`` of them are copied.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import lightning_xai.functional.calibration._common as common
from lightning_xai.functional.calibration._common import _StateData

__all__: list[str] = []


def _smallest_keys(rows: Tensor, count: int) -> Tensor:
    return rows.index_select(0, torch.topk(rows[:, 0], count, largest=False, sorted=False).indices)


def _compact(state: _StateData, exact: bool = False) -> None:
    """Cut the buffer back to (about) the ``k = adaptive_sample`` smallest keys.

    The exact cut is a ``topk``. On the CPU a cheaper cut is tried first: the keys are uniform, so after
    ``n`` predictions about ``t * n`` of them lie below ``t``; with ``t`` six standard deviations above
    ``k / n``, the rows with keys ``<= t`` number at least ``k`` (else, about once in 1e9, the ``topk`` runs)
    and so hold the ``k`` smallest. ``sample_threshold`` remembers ``t``: every key of the stream up to it is
    still in the buffer, so later cuts never raise it and later predictions above it are not kept.
    """
    rows, k = state.sample[:state.sample_fill], state.adaptive_sample
    if rows.shape[0] <= k:
        return
    branch = common._branch_on_values(rows)
    cut = None
    if not exact and branch and state.sample_pushed:
        threshold = min(state.sample_threshold, (k + 6 * math.sqrt(k) + 16) / state.sample_pushed)
        keep = (rows[:, 0] <= threshold).nonzero().squeeze(1)
        if k <= keep.shape[0] < rows.shape[0]:
            cut, state.sample_threshold = rows.index_select(0, keep), threshold
    if cut is None:
        cut = _smallest_keys(rows, k)
        if branch:
            state.sample_threshold = min(state.sample_threshold, float(cut[:, 0].max()))
    state.sample[:cut.shape[0]] = cut
    state.sample_fill = cut.shape[0]


def _reserve(state: _StateData, count: int) -> None:
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


def _reservoir_extend(state: _StateData, columns: tuple[Tensor, Tensor, Tensor]) -> None:
    """Append rows (key, confidence, outcome), given as three columns, to the buffer, cutting it when full."""
    step = state.adaptive_sample  # a cut always frees this many rows
    for start in range(0, columns[0].shape[0], step):
        piece = tuple(c[start:start + step] for c in columns)
        count = piece[0].shape[0]
        _reserve(state, count)
        fill = state.sample_fill
        torch.stack(piece, dim=1, out=state.sample[fill:fill + count])
        state.sample_fill = fill + count


def _reservoir_offer(state: _StateData, confidence: Tensor, correct: Tensor, valid: Tensor | None) -> None:
    """Draw a key for each new prediction and keep those that may still make the sample.

    ``valid`` is False for predictions of non-finite rows: they draw a key too (so the keys of the others do
    not depend on it), which is then ``inf``.
    """
    generator = state.generator
    if generator is None or confidence.numel() == 0:
        return
    count = confidence.shape[0]
    keys = torch.rand(count, generator=generator, device=generator.device)
    if keys.device != confidence.device:
        keys = keys.to(confidence.device)
    if valid is not None:
        keys = keys.masked_fill_(~valid, math.inf)
    confidence, correct = confidence.float(), correct.float()
    if state.sample_threshold < math.inf:  # only ever lowered on the CPU: no device sync
        keep = (keys <= state.sample_threshold).nonzero().squeeze(1)
        keys, confidence, correct = (c.index_select(0, keep) for c in (keys, confidence, correct))
    _reservoir_extend(state, (keys, confidence, correct))
    state.sample_pushed += count


def _reservoir_rows(state: _StateData) -> Tensor:
    """The sample: the ``(m, 3)`` rows with the ``adaptive_sample`` smallest finite keys (binned rows only)."""
    rows = state.sample[:state.sample_fill]
    if rows.shape[0] > state.adaptive_sample:
        rows = _smallest_keys(rows, state.adaptive_sample)
    return rows.index_select(0, torch.isfinite(rows[:, 0]).nonzero().squeeze(1))
