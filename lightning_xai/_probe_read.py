"""Reading probe samples: a dataset or dataloader into one collated batch, with errors that say which samples
do not fit together.

Map-style datasets are read in index order and collated chunk by chunk (:func:`read_map_style`); iterable
datasets through their loader (:func:`read_iterable`); a list of samples is read like a dataset
(:func:`samples_as_dataset`). :class:`Source` names where the samples came from in warnings and errors. The
choice of the probe itself is :mod:`lightning_xai.probe`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch  # noqa: F401  (the docstring examples use it)
from torch.utils.data import Dataset

from lightning_xai._batch import batch_size_of, concat_batches, shape_signature

__all__ = ["Source", "read_iterable", "read_map_style", "samples_as_dataset"]


@dataclass
class Source:
    """Where samples are read from, for messages: the user argument they came in (else a dataloader) and the
    argument that counts them (``None``: the user's own data, never too short).

    Example:
        >>> Source(samples_as_dataset([(torch.zeros(2), 0)]), given_as="probe").text
        'the `probe` list of samples'
        >>> Source(None).text
        'the dataloader'
    """

    dataset: Any
    given_as: str | None = None
    count_name: str | None = "num_samples"

    @property
    def text(self) -> str:
        kind = type(self.dataset).__name__ if self.dataset is not None else None
        if self.given_as is not None:
            return f"the `{self.given_as}` " + ("list of samples" if kind == "_Samples" else f"dataset ({kind})")
        return f"the dataloader's dataset ({kind})" if kind else "the dataloader"

    def ragged(self, shapes: Sequence[tuple[str, str]], err: Exception) -> ValueError:
        """The error for samples (or batches) that cannot be stacked into one batch: which have which shapes."""
        groups: dict[str, list[str]] = {}
        for where, shape in shapes:
            groups.setdefault(shape, []).append(where)
        listed = "; ".join(
            f"[{', '.join(ws[:6])}{f', ... ({len(ws)} in all)' if len(ws) > 6 else ''}]: {shape}"
            for shape, ws in groups.items()
        )
        cause = f" ({type(err).__name__}: {err})"
        if self.given_as is not None:
            return ValueError(
                f"Expected argument `{self.given_as}` to be samples of one size (they are stacked into one batch) "
                f"or a batch, but got {self.text} whose samples differ in size: {listed}. Give samples of one size "
                "(resize or pad them) or one batch, e.g. (x, y) with x of shape (N, C, H, W)." + cause
            )
        instead = {"num_samples": "probe", "n_background": "background"}.get(str(self.count_name), "probe")
        return ValueError(
            f"lightning_xai could not draw `{self.count_name}` samples from {self.text}: its samples differ in size "
            f"and the dataloader's collate_fn cannot stack them into one batch: {listed}. Give the dataset samples "
            f"of one size, a collate_fn that pads every batch to one size, or pass `{instead}=` (samples of one "
            "size or a batch)." + cause
        )


_COLLATE_ERRORS = (RuntimeError, TypeError, ValueError)


def _collate(collate: Callable[[list[Any]], Any], items: list[Any], ids: list[int], source: Source) -> Any:
    """``collate(items)``; samples of several sizes give an error naming which indices have which shapes."""
    try:
        return collate(items)
    except _COLLATE_ERRORS as err:
        shapes = [(str(i), shape_signature(item)) for i, item in zip(ids, items)]
        if len({shape for _, shape in shapes}) < 2:
            raise
        raise source.ragged(shapes, err) from err


def read_map_style(
    dataset: Any, collate: Callable[[list[Any]], Any], step: int, n: int, source: Source
) -> Any:
    """The first ``n`` samples collated ``step`` at a time and concatenated; if the chunks do not fit together
    (a collate_fn that pads each batch to its longest sample), the ``n`` samples collated at once.

    Example:
        >>> from torch.utils.data import TensorDataset, default_collate
        >>> ds = TensorDataset(torch.arange(6.), torch.tensor([0, 1, 0, 1, 0, 1]))
        >>> read_map_style(ds, default_collate, 2, 5, Source(ds))
        [tensor([0., 1., 2., 3., 4.]), tensor([0, 1, 0, 1, 0])]
    """
    chunks = []
    for start in range(0, n, step):
        ids = list(range(start, min(n, start + step)))
        chunks.append(_collate(collate, [dataset[i] for i in ids], ids, source))
    try:
        return concat_batches(chunks)
    except _COLLATE_ERRORS:
        return _collate(collate, [dataset[i] for i in range(n)], list(range(n)), source)


def read_iterable(dataloader: Any, pool_size: int, source: Source) -> tuple[Any, list[int]]:
    """The batches of ``dataloader`` until they hold ``pool_size`` samples, concatenated, and their indices (all
    ``-1``: unknown); ``(None, [])`` when it yields nothing.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> pool, indices = read_iterable(DataLoader(torch.arange(6.), batch_size=4), 5, Source(None))
        >>> pool.tolist(), indices
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [-1, -1, -1, -1, -1, -1])
    """
    chunks: list[Any] = []
    indices: list[int] = []
    for batch in dataloader:
        chunks.append(batch)
        indices.extend([-1] * batch_size_of(batch))
        if len(indices) >= pool_size:
            break
    if not chunks:
        return None, indices
    try:
        return concat_batches(chunks), indices
    except _COLLATE_ERRORS as err:
        shapes = [(f"batch {i}", shape_signature(c, drop_batch=True)) for i, c in enumerate(chunks)]
        if len({shape for _, shape in shapes}) < 2:
            raise
        raise source.ragged(shapes, err) from err


class _Samples(Dataset):
    """A list of samples (e.g. ``[dataset[i] for i in ids]``) read like a dataset."""

    def __init__(self, samples: list[Any]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index]


def _is_sample_list(data: Any) -> bool:
    return isinstance(data, list) and len(data) > 0 and all(isinstance(v, (tuple, list, Mapping)) for v in data)


def samples_as_dataset(data: Any) -> Any:
    """``data`` read like a dataset if it is a non-empty list of samples (tuples, lists, dicts), else as is.

    Example:
        >>> ds = samples_as_dataset([(torch.zeros(2), 0), (torch.ones(2), 1)])
        >>> len(ds), ds[1][1], samples_as_dataset((torch.zeros(2, 2),))[0].shape
        (2, 1, torch.Size([2, 2]))
    """
    return _Samples(data) if _is_sample_list(data) else data
