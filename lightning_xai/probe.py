"""Probe sets: the fixed inputs every explanation is computed on.

Chosen once, deterministically, class-balanced when labels exist, kept on the CPU and saved in the callback state,
so that every epoch, a resumed run and a checkpoint-only run explain the very same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.dataloader import default_collate

from lightning_xai._checks import expected
from lightning_xai._batch import batch_size_of, concat_batches, move_to, slice_batch
from lightning_xai.adapters import ModelInputs

__all__ = ["Probe", "balanced_order", "probe_from_dataloader", "probe_from_user"]


@dataclass
class Probe:
    """A fixed batch of samples to explain, kept on the CPU.

    Args:
        batch: the samples, collated exactly like a batch of the dataloader they came from.
        indices: each sample's index in its dataset (``-1`` where unknown), in probe order.

    Example:
        >>> p = Probe(batch=(torch.zeros(2, 3), torch.tensor([0, 1])), indices=[4, 9])
        >>> len(p), p.state()["indices"]
        (2, [4, 9])
    """

    batch: Any
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    def state(self) -> dict[str, Any]:
        """The probe as plain tensors and lists, fit for a checkpoint (``torch.load(weights_only=True)`` safe)."""
        return {"batch": self.batch, "indices": list(self.indices)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Probe:
        """Rebuild a probe saved by :meth:`state`."""
        return cls(batch=state["batch"], indices=[int(i) for i in state["indices"]])


def balanced_order(labels: Sequence[int], num_samples: int) -> list[int]:
    """Positions of ``num_samples`` items taken round-robin over classes, each class in data order; sorted.

    Example:
        >>> balanced_order([0, 0, 0, 1, 1, 2], 4)
        [0, 1, 3, 5]
    """
    by_class: dict[int, list[int]] = {}
    for pos, lab in enumerate(labels):
        by_class.setdefault(int(lab), []).append(pos)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < num_samples and any(depth < len(v) for v in by_class.values()):
        for cls in sorted(by_class):
            if depth < len(by_class[cls]) and len(chosen) < num_samples:
                chosen.append(by_class[cls][depth])
        depth += 1
    return sorted(chosen)


def _labels_of(batch: Any, batch_to_inputs: Callable[[Any], ModelInputs]) -> Tensor | None:
    labels = batch_to_inputs(batch).labels
    if labels is None or labels.dim() != 1 or labels.is_floating_point():
        return None
    return labels


def _finish(
    chunks: list[Any], indices: list[int], num_samples: int, batch_to_inputs: Callable[[Any], ModelInputs]
) -> Probe:
    if not chunks:
        raise ValueError(
            expected("num_samples", "drawn from a non-empty dataloader; the dataloader yielded no samples", num_samples)
        )
    pool = concat_batches(chunks)
    labels = _labels_of(pool, batch_to_inputs)
    if labels is not None:
        chosen = balanced_order(labels.tolist(), num_samples)
    else:
        chosen = list(range(min(num_samples, len(indices))))
    batch = move_to(slice_batch(pool, chosen), "cpu")
    return Probe(batch=_detach_clone(batch), indices=[indices[i] for i in chosen])


def _detach_clone(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        with torch.inference_mode(False):
            return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _detach_clone(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detach_clone(v) for v in obj)
    return obj


def probe_from_dataloader(
    dataloader: DataLoader,
    num_samples: int,
    batch_to_inputs: Callable[[Any], ModelInputs],
    pool_size: int | None = None,
) -> Probe:
    """Pick ``num_samples`` probe samples from the first ``pool_size`` items of a dataloader's dataset.

    Map-style datasets are read in index order, ignoring the sampler (so every DDP rank picks the same probe) and
    collated with the loader's ``collate_fn``; iterable datasets are read through the loader. Class-balanced when
    the batches carry integer labels.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(10.).view(10, 1), torch.tensor([0] * 8 + [1] * 2))
        >>> from lightning_xai.adapters import default_batch_to_inputs
        >>> probe_from_dataloader(DataLoader(ds, batch_size=4), 4, default_batch_to_inputs).indices
        [0, 1, 8, 9]
    """
    pool_size = pool_size or max(16 * num_samples, 256)
    dataset = getattr(dataloader, "dataset", None)
    collate = getattr(dataloader, "collate_fn", None) or default_collate
    step = getattr(dataloader, "batch_size", None) or 32
    chunks: list[Any] = []
    indices: list[int] = []
    if dataset is not None and not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__"):
        n = min(len(dataset), pool_size)
        for start in range(0, n, step):
            ids = list(range(start, min(n, start + step)))
            chunks.append(collate([dataset[i] for i in ids]))
            indices.extend(ids)
    else:
        for batch in dataloader:
            size = batch_size_of(batch)
            chunks.append(batch)
            indices.extend([-1] * size)
            if len(indices) >= pool_size:
                break
    return _finish(chunks, indices, num_samples, batch_to_inputs)


def probe_from_user(
    probe: Any, num_samples: int | None, batch_to_inputs: Callable[[Any], ModelInputs]
) -> Probe:
    """Build a probe from what the user gave: a batch-shaped tuple/dict of tensors, or a ``Dataset``.

    A batch is used whole and in its order (``num_samples`` ignored); a dataset is read like a dataloader's.

    Example:
        >>> from lightning_xai.adapters import default_batch_to_inputs
        >>> len(probe_from_user((torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 2])), None, default_batch_to_inputs))
        3
    """
    if isinstance(probe, Dataset):
        return probe_from_dataloader(DataLoader(probe, batch_size=32), num_samples or 8, batch_to_inputs)
    try:
        size = batch_size_of(probe)
    except TypeError as err:
        raise TypeError(
            expected("probe", "a batch-shaped tuple/dict of tensors, e.g. (x, y), or a torch Dataset", type(probe))
        ) from err
    return Probe(batch=_detach_clone(move_to(probe, "cpu")), indices=[-1] * size)
