"""Probe sets: the fixed inputs every explanation is computed on.

Chosen once, deterministically, class-balanced when labels exist, kept on the CPU and saved in the callback state,
so that every epoch, a resumed run and a checkpoint-only run explain the very same samples. Reading the
samples (a dataset, a dataloader or a list of samples into one batch) is ``lightning_xai._probe_read``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.dataloader import default_collate

from lightning_xai._checks import expected
from lightning_xai._batch import batch_size_of, move_to, shape_signature, slice_batch
from lightning_xai._probe_read import Source, read_iterable, read_map_style, samples_as_dataset
from lightning_xai.adapters import ModelInputs

__all__ = ["Probe", "balanced_order", "forget_pools", "probe_from_dataloader", "probe_from_user"]


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
    pool: Any, indices: list[int], num_samples: int, batch_to_inputs: Callable[[Any], ModelInputs], source: Source
) -> Probe:
    labels = _labels_of(pool, batch_to_inputs)
    if labels is not None:
        chosen = balanced_order(labels.tolist(), num_samples)
    else:
        chosen = list(range(min(num_samples, len(indices))))
    if len(chosen) < num_samples and source.count_name is not None:
        rank_zero_warn(
            f"lightning_xai: asked for {source.count_name}={num_samples} but {source.text} has only {len(chosen)} "
            f"samples; using {len(chosen)}."
        )
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
    *,
    count_name: str | None = "num_samples",
    given_as: str | None = None,
    shared: bool = False,
) -> Probe:
    """Pick ``num_samples`` probe samples from the first ``pool_size`` items of a dataloader's dataset.

    Map-style datasets are read in index order, ignoring the sampler (so every DDP rank picks the same probe) and
    collated with the loader's ``collate_fn``; iterable datasets are read through the loader. Class-balanced when
    the batches carry integer labels.

    Args:
        dataloader: The dataloader.
        num_samples: How many samples to pick.
        batch_to_inputs: Maps a batch to :class:`~lightning_xai.adapters.ModelInputs` (labels for balancing).
        pool_size: How many leading samples to choose from (default ``max(16 * num_samples, 256)``).
        count_name: The argument ``num_samples`` came from, named in the warning given (once, on rank zero) when
            the data holds fewer samples; ``None``: no warning.
        given_as: The user argument the dataloader's dataset came in (named in errors), ``None`` for a trainer's
            dataloader.
        shared: Keep the samples read (the pool) for the next call on the same dataloader object with the same
            ``pool_size`` until :func:`forget_pools`: the callbacks of one trainer read their validation data once
            (each read decodes up to ``pool_size`` samples) instead of once each. The callbacks forget the pools
            at the end of every validation, test and predict run, on an exception and at teardown.

    Raises:
        ValueError: If the dataloader yields no samples, or its samples differ in size so that they cannot be
            stacked into one batch (the message lists which sample indices have which shapes).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(10.).view(10, 1), torch.tensor([0] * 8 + [1] * 2))
        >>> from lightning_xai.adapters import default_batch_to_inputs
        >>> probe_from_dataloader(DataLoader(ds, batch_size=4), 4, default_batch_to_inputs).indices
        [0, 1, 8, 9]
    """
    pool_size = pool_size or max(16 * num_samples, 256)
    dataset = getattr(dataloader, "dataset", None)
    source = Source(dataset, given_as, count_name)
    kept = _POOLS.get((id(dataloader), pool_size)) if shared else None
    if kept is not None and kept[0]() is dataloader:
        pool, indices = kept[1], kept[2]
    else:
        pool, indices = _read_pool(dataloader, dataset, pool_size, source)
        if shared and type(dataloader).__weakrefoffset__:  # a list of batches cannot be referred to weakly
            with _POOLS_LOCK:
                _POOLS[(id(dataloader), pool_size)] = (weakref.ref(dataloader), pool, indices)
    if not indices:
        if given_as is not None:
            raise ValueError(expected(given_as, "a dataset with at least one sample", f"an empty {source.text}"))
        raise ValueError(
            expected("num_samples", "drawn from a non-empty dataloader; the dataloader yielded no samples", num_samples)
        )
    return _finish(pool, indices, num_samples, batch_to_inputs, source)


_POOLS: dict[tuple[int, int], tuple[weakref.ref[Any], Any, list[int]]] = {}
_POOLS_LOCK = threading.Lock()


def forget_pools() -> None:
    """Drop the samples kept by ``probe_from_dataloader(..., shared=True)`` (the next call reads them again).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from lightning_xai.adapters import default_batch_to_inputs
        >>> loader = DataLoader(TensorDataset(torch.arange(6.).view(6, 1), torch.tensor([0, 1] * 3)), batch_size=2)
        >>> probe_from_dataloader(loader, 2, default_batch_to_inputs, shared=True).indices
        [0, 1]
        >>> forget_pools()
    """
    with _POOLS_LOCK:
        _POOLS.clear()


def _read_pool(dataloader: Any, dataset: Any, pool_size: int, source: Source) -> tuple[Any, list[int]]:
    """The first ``pool_size`` samples of the loader's dataset as one batch, and their dataset indices."""
    if dataset is not None and not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__"):
        collate = getattr(dataloader, "collate_fn", None) or default_collate
        step = getattr(dataloader, "batch_size", None) or 32
        n = min(len(dataset), pool_size)
        return (read_map_style(dataset, collate, step, n, source) if n else None), list(range(n))
    return read_iterable(dataloader, pool_size, source)


def _tensor_leaves(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensor_leaves(v)]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in _tensor_leaves(v)]
    return []


def probe_from_user(
    probe: Any,
    num_samples: int | None,
    batch_to_inputs: Callable[[Any], ModelInputs],
    *,
    argument: str = "probe",
    count_name: str | None = "num_samples",
) -> Probe:
    """Build a probe from what the user gave: a batch-shaped tuple/dict of tensors, a ``Dataset`` or a list of
    samples (``[dataset[i] for i in ids]``).

    A batch is used whole and in its order (``num_samples`` ignored); a dataset or a list of samples is read
    like a dataloader's dataset: ``num_samples`` of them, class-balanced, collated with ``default_collate``.

    Args:
        probe: The samples.
        num_samples: How many samples to take from a dataset (default 8).
        batch_to_inputs: Maps a batch to :class:`~lightning_xai.adapters.ModelInputs`.
        argument: The user argument ``probe`` came in, named in errors.
        count_name: The argument ``num_samples`` came from, named in the warning when a dataset is shorter;
            ``None``: no warning.

    Raises:
        TypeError: If ``probe`` is neither a batch, nor a dataset, nor a list of samples.
        ValueError: If it holds no sample, its samples differ in size, or a batch's tensors differ in their first
            (batch) dimension.

    Example:
        >>> from lightning_xai.adapters import default_batch_to_inputs
        >>> len(probe_from_user((torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 2])), None, default_batch_to_inputs))
        3
        >>> len(probe_from_user([(torch.zeros(1, 4, 4), 0), (torch.ones(1, 4, 4), 1)], 8, default_batch_to_inputs,
        ...                     count_name=None))
        2
    """
    probe = samples_as_dataset(probe)
    if isinstance(probe, Dataset):
        loader = DataLoader(probe, batch_size=32)
        return probe_from_dataloader(loader, num_samples or 8, batch_to_inputs, count_name=count_name,
                                     given_as=argument)
    try:
        size = batch_size_of(probe)
    except (TypeError, StopIteration, IndexError) as err:
        raise TypeError(
            expected(argument, "a batch-shaped tuple/dict of tensors, e.g. (x, y), a torch Dataset or a list of "
                     "samples", type(probe).__name__)
        ) from err
    sizes = sorted({int(t.shape[0]) for t in _tensor_leaves(probe) if t.dim() > 0})
    if len(sizes) > 1:
        raise ValueError(expected(argument, "a batch whose tensors share their first (batch) dimension",
                                  f"a batch of shapes {shape_signature(probe)}"))
    if size == 0:
        raise ValueError(expected(argument, "a batch with at least one sample", f"a batch of shapes "
                                  f"{shape_signature(probe)}"))
    return Probe(batch=_detach_clone(move_to(probe, "cpu")), indices=[-1] * size)
