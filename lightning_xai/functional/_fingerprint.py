"""Content hashes of models and tensors, to tie artifacts to the weights and inputs that made them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["model_fingerprint", "tensor_fingerprint"]


def _update(h: "hashlib._Hash", tensors: Iterable[tuple[str, Tensor]]) -> None:
    for name, t in tensors:
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        data = t.detach().to("cpu").contiguous()
        if data.dtype == torch.bfloat16:
            data = data.view(torch.int16)
        h.update(data.numpy().tobytes())


def model_fingerprint(model: nn.Module) -> str:
    """Hex digest (16 chars) of every parameter and buffer of ``model``: same weights, same hash.

    Example:
        >>> a = nn.Linear(2, 2); b = nn.Linear(2, 2); b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> model_fingerprint(a) == model_fingerprint(b)
        True
    """
    h = hashlib.blake2b(digest_size=8)
    with torch.no_grad():
        _update(h, model.state_dict(keep_vars=False).items())
    return h.hexdigest()


def tensor_fingerprint(*tensors: Tensor) -> str:
    """Hex digest (16 chars) of tensors' shapes, dtypes and values.

    Example:
        >>> tensor_fingerprint(torch.zeros(2)) == tensor_fingerprint(torch.zeros(2))
        True
    """
    h = hashlib.blake2b(digest_size=8)
    _update(h, ((str(i), t) for i, t in enumerate(tensors)))
    return h.hexdigest()
