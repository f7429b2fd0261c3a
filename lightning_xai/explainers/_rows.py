"""Explaining a batch in parts: the rows of a :class:`~lightning_xai.adapters.ModelInputs` batch, and the
explanations of consecutive parts joined back into the one explanation of the whole batch.

A distributed callback explains its share of the probe on each rank and joins the gathered parts; only explainers
whose result for a sample does not depend on the other samples of the batch (``Explainer.splittable``) are split.
Lightning-free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers._base import Explanation

__all__ = ["concat_explanations", "row_ranges", "take_rows"]


def row_ranges(n: int, world: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` rows of ``n`` for each of ``world`` parts, as even as possible (the first
    ``n % world`` parts one row more), every part non-empty (``world`` must not exceed ``n``).

    Example:
        >>> row_ranges(5, 2)
        [(0, 3), (3, 5)]
    """
    if not 1 <= world <= n:
        raise ValueError(f"lightning_xai: cannot split {n} rows into {world} non-empty parts.")
    size, extra = divmod(n, world)
    out, start = [], 0
    for part in range(world):
        stop = start + size + (part < extra)
        out.append((start, stop))
        start = stop
    return out


def take_rows(inputs: ModelInputs, start: int, stop: int) -> ModelInputs:
    """Rows ``start:stop`` of every batch-first tensor of ``inputs`` (labels and masks included).

    Example:
        >>> take_rows(ModelInputs((torch.arange(6).view(3, 2),), labels=torch.tensor([0, 1, 2])), 1, 3).labels
        tensor([1, 2])
    """

    def rows(t: Any) -> Any:
        return t[start:stop] if isinstance(t, Tensor) and t.dim() > 0 else t

    return ModelInputs(tuple(rows(a) for a in inputs.args), {k: rows(v) for k, v in inputs.kwargs.items()},
                       rows(inputs.labels), rows(inputs.mask))


def concat_explanations(parts: Sequence[Explanation]) -> Explanation:
    """The explanation of consecutive row parts joined into one, in part order: every per-sample field
    (``row_fields`` of the parts' class; ``entry_fields``: lists whose entries are per-sample) concatenated, the
    rest taken from the first part after checking that every part agrees on it (a layer found differently on two ranks is an error, not a guess).

    Example:
        >>> a = Explanation(method="m", values={"x": torch.zeros(1, 2)}, inputs={}, kinds={"x": "tabular"})
        >>> b = Explanation(method="m", values={"x": torch.ones(2, 2)}, inputs={}, kinds={"x": "tabular"})
        >>> concat_explanations([a, b]).values["x"].shape
        torch.Size([3, 2])
    """
    first = parts[0]
    if len(parts) == 1:
        return first
    if any(type(p) is not type(first) for p in parts):
        raise TypeError(f"lightning_xai: cannot join explanations of types {sorted({type(p).__name__ for p in parts})}.")
    return _join_dataclass(list(parts))


def _join_dataclass(parts: list[Any]) -> Any:
    first = parts[0]
    per_row = set(getattr(first, "row_fields", ()))
    per_entry = set(getattr(first, "entry_fields", ()))
    changes = {}
    for f in dataclasses.fields(first):
        values = [getattr(p, f.name) for p in parts]
        if f.name in per_row:
            changes[f.name] = _join_rows(values, f.name)
        elif f.name in per_entry:  # a list (top-k ranks) whose entries are joined by rows
            changes[f.name] = None if values[0] is None else [
                _join_rows(list(entries), f.name) for entries in zip(*values)]
        else:
            _check_same(values, f.name, type(first).__name__)
    return dataclasses.replace(first, **changes)


def _join_rows(values: list[Any], name: str) -> Any:
    first = values[0]
    if first is None:
        if any(v is not None for v in values):
            raise ValueError(f"lightning_xai: field {name!r} is set on some parts only.")
        return None
    if isinstance(first, Tensor):
        return torch.cat(values)
    if isinstance(first, dict):
        return {k: _join_rows([v[k] for v in values], f"{name}[{k!r}]") for k in first}
    if isinstance(first, list):
        return [item for v in values for item in v]
    if isinstance(first, tuple):  # one per-sample tensor per input, or (classes, result) of one top-k rank
        return tuple(_join_rows(list(column), name) for column in zip(*values))
    if dataclasses.is_dataclass(first):  # a result with its own row_fields
        return _join_dataclass(values)
    raise TypeError(f"lightning_xai: cannot join field {name!r} of type {type(first).__name__} by rows.")


def _check_same(values: list[Any], name: str, owner: str) -> None:
    first = values[0]
    for other in values[1:]:
        same = (torch.equal(first, other) if isinstance(first, Tensor) and isinstance(other, Tensor)
                else _plain(first) == _plain(other))
        if not same:
            raise RuntimeError(
                f"lightning_xai: the parts of one {owner} disagree on {name!r} ({first!r} vs {other!r}): the ranks "
                "explained their shares of the probe differently. Fix what was decided per call (e.g. give "
                "`target_layer=` instead of letting each rank find the layer).")


def _plain(value: Any) -> Any:
    """Compare settings by value; callables (a reshape transform) by their qualified name."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), value.tolist())
    if callable(value):
        return getattr(value, "__qualname__", repr(type(value)))
    return value
