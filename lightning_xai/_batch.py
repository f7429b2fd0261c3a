"""Nested batch utilities: size, slicing, concatenation and device moves of tuples/dicts/lists of tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["batch_size_of", "concat_batches", "move_to", "shape_signature", "slice_batch"]


def batch_size_of(batch: Any) -> int:
    """Number of samples in a (possibly nested) batch.

    Example:
        >>> batch_size_of((torch.zeros(3, 2), torch.zeros(3)))
        3
    """
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        return batch_size_of(next(iter(batch.values())))
    if isinstance(batch, (tuple, list)):
        return batch_size_of(batch[0]) if batch and not isinstance(batch[0], str) else len(batch)
    raise TypeError(f"Cannot find the batch size of a {type(batch).__name__}.")


def slice_batch(batch: Any, index: Tensor | Sequence[int]) -> Any:
    """Select samples ``index`` from every tensor (and list) in a nested batch.

    Example:
        >>> slice_batch({"x": torch.arange(4), "names": ["a", "b", "c", "d"]}, [3, 0])
        {'x': tensor([3, 0]), 'names': ['d', 'a']}
    """
    idx = torch.as_tensor(index, dtype=torch.long)
    if isinstance(batch, Tensor):
        return batch[idx.to(batch.device)] if batch.dim() > 0 else batch
    if isinstance(batch, Mapping):
        return {k: slice_batch(v, idx) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(slice_batch(v, idx) for v in batch))
    if isinstance(batch, (tuple, list)):
        if batch and all(isinstance(v, (str, int, float)) for v in batch):
            return [batch[i] for i in idx.tolist()]
        return type(batch)(slice_batch(v, idx) for v in batch)
    return batch


def concat_batches(batches: Sequence[Any]) -> Any:
    """Concatenate nested batches of the same structure along the batch dimension.

    Example:
        >>> concat_batches([(torch.zeros(1, 2), [1]), (torch.ones(2, 2), [2, 3])])[1]
        [1, 2, 3]
    """
    first = batches[0]
    if isinstance(first, Tensor):
        return torch.cat([b if b.dim() > 0 else b[None] for b in batches])
    if isinstance(first, Mapping):
        return {k: concat_batches([b[k] for b in batches]) for k in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(concat_batches([b[i] for b in batches]) for i in range(len(first))))
    if isinstance(first, (tuple, list)):
        if all(isinstance(v, (str, int, float)) for v in first):
            return [v for b in batches for v in b]
        return type(first)(concat_batches([b[i] for b in batches]) for i in range(len(first)))
    return first


def move_to(obj: Any, device: torch.device | str) -> Any:
    """Move every tensor in a nested structure to ``device``.

    Example:
        >>> move_to({"x": torch.ones(1)}, "cpu")["x"].device.type
        'cpu'
    """
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(move_to(v, device) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(move_to(v, device) for v in obj)
    return obj


def shape_signature(obj: Any, drop_batch: bool = False) -> str:
    """The shapes of every tensor (or array) in a nested sample or batch, for error messages.

    Example:
        >>> shape_signature((torch.zeros(3, 8, 8), 1, {"mask": torch.zeros(8, 8)}))
        "((3, 8, 8), int, {'mask': (8, 8)})"
        >>> shape_signature([torch.zeros(4, 3, 8, 8)], drop_batch=True)
        '[(3, 8, 8)]'
    """
    if isinstance(obj, Tensor) or (hasattr(obj, "shape") and hasattr(obj, "dtype")):
        shape = tuple(int(s) for s in obj.shape)
        return str(shape[1:] if drop_batch and shape else shape)
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k!r}: {shape_signature(v, drop_batch)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (tuple, list)):
        if drop_batch and obj and all(isinstance(v, (str, int, float)) for v in obj):
            return type(obj[0]).__name__  # a collated list of strings/numbers: one per sample
        inner = ", ".join(shape_signature(v, drop_batch) for v in obj)
        return f"({inner}{',' if len(obj) == 1 else ''})" if isinstance(obj, tuple) else f"[{inner}]"
    return type(obj).__name__
