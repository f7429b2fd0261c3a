"""Random numbers per sample: a generator for each row of a batch, seeded by one draw of the caller's generator
mixed with a hash of the row's values, so that a sample gets the same numbers whichever batch it is explained in
(all of the probe, or one rank's share of it). Pure torch."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["row_generators", "row_seeds"]


def row_seeds(generator: torch.Generator, tensors: Sequence[Tensor]) -> list[int]:
    """One seed per row (the first dimension, shared by ``tensors``): one draw of ``generator`` mixed with a
    blake2b hash of the row's bytes in every tensor.

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> a = row_seeds(torch.Generator().manual_seed(0), [x])
        >>> b = row_seeds(torch.Generator().manual_seed(0), [x[1:]])
        >>> a[1] == b[0] and a[0] != a[1]
        True
    """
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    rows = [t.detach().cpu().contiguous() for t in tensors]
    seeds = []
    for b in range(rows[0].shape[0] if rows else 0):
        digest = hashlib.blake2b(digest_size=8)
        for t in rows:
            digest.update(t[b].reshape(-1).view(torch.uint8).numpy().tobytes())
        seeds.append((base ^ int.from_bytes(digest.digest(), "little")) % 2**63)
    return seeds


def row_generators(generator: torch.Generator, tensors: Sequence[Tensor]) -> list[torch.Generator]:
    """A CPU generator per row, seeded by :func:`row_seeds`.

    Example:
        >>> gens = row_generators(torch.Generator().manual_seed(0), [torch.zeros(3, 2)])
        >>> len(gens), bool(torch.rand(1, generator=gens[0]) == torch.rand(1, generator=gens[1]))
        (3, True)
    """
    return [torch.Generator().manual_seed(seed) for seed in row_seeds(generator, tensors)]
