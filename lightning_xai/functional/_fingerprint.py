"""Content hashes of models and tensors, to tie artifacts to the weights and inputs that made them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from lightning_xai.functional._fsdp import is_dtensor, is_fsdp2

__all__ = ["model_fingerprint", "tensor_fingerprint"]


def _update(h: "hashlib._Hash", tensors: Iterable[tuple[str, Tensor]]) -> None:
    for name, t in tensors:
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        # a copy: ``numpy()`` of the model's own CPU storage would mark it non-resizable for good (FSDP2 frees its
        # gathered parameters by resizing their storage to 0)
        data = t.detach().to("cpu", copy=True).contiguous()
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
        _update(h, _plain_state(model))
    return h.hexdigest()


def _plain_state(model: nn.Module) -> list[tuple[str, Tensor]]:
    """What ``model.state_dict()`` holds, by its names and in its order. A model sharded by FSDP2 is read from its
    modules instead: its ``state_dict`` hook would swap the sharded parameters back in while the model is gathered
    (``functional/_fsdp.py``), and a shard would tie the hash to one rank's slice; gathered, its parameters are
    whole and the hash is that of the same weights unsharded. A parameter still sharded there is refused."""
    if not is_fsdp2(model):
        return list(model.state_dict(keep_vars=False).items())
    out = []
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        out += [(dot + n, p) for n, p in module.named_parameters(recurse=False)]
        skip = getattr(module, "_non_persistent_buffers_set", set())  # nn.Module's own record
        out += [(dot + n, b) for n, b in module.named_buffers(recurse=False) if n not in skip]
    sharded = [name for name, t in out if is_dtensor(t)]
    if sharded:
        raise RuntimeError(f"lightning_xai: cannot hash the model: {sharded[:3]} are sharded (DTensors) and not "
                           "gathered on this rank.")
    return out



def tensor_fingerprint(*tensors: Tensor) -> str:
    """Hex digest (16 chars) of tensors' shapes, dtypes and values.

    Example:
        >>> tensor_fingerprint(torch.zeros(2)) == tensor_fingerprint(torch.zeros(2))
        True
    """
    h = hashlib.blake2b(digest_size=8)
    _update(h, ((str(i), t) for i, t in enumerate(tensors)))
    return h.hexdigest()
