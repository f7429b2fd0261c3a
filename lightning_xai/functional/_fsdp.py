"""Explaining a model that FSDP2 shards (Lightning's ``ModelParallelStrategy`` with ``fully_shard`` in
``configure_model``; the callbacks use :func:`gathered` around each epoch-end step): every rank gathers the whole model (each ``FSDPModule``'s ``unshard``,
a collective in which all ranks take part in the same order), with FSDP told not to reshard after forward or
backward and not to reduce gradients; the explanation then runs with plain parameters on each rank, free of
collectives (a rank may explain its share of the probe, or rank zero alone may run the model: the gallery, the
faithfulness curves), as under DDP. Afterwards the parameters are resharded and FSDP's settings put back exactly as
they were (its training goes on as before: the sharded parameters, their gradients and the optimiser never change).

The price is the whole model's parameters on every rank for the length of the step, as FSDP1's
``summon_full_params``; activations are those of an inference pass on the probe. A model that cannot hold its
parameters on one device needs the layer-by-layer gathering of training, which adaptive explainers (rounds that
differ between ranks) cannot keep in lockstep: not supported. Tensor parallelism (DTensor parameters that stay
sharded after ``unshard``) is refused with the reason: its forward is itself collective.

FSDP2's public setters change settings but have no getters, so the current values are read from (and written back
to) each module's parameter groups; a torch version whose groups lack them is refused with the version named.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["gathered", "is_dtensor", "is_fsdp2"]

_SETTINGS = ("post_forward_mesh_info", "reshard_after_backward", "reduce_grads", "all_reduce_grads")
_GATHERED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models inside a gathered() block (re-entrant)


def _fsdp_modules(model: nn.Module) -> list[Any]:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_fsdp2(model: nn.Module) -> bool:
    """Whether ``fully_shard`` (FSDP2) shards ``model`` or one of its modules.

    Example:
        >>> is_fsdp2(nn.Linear(2, 2))
        False
    """
    return bool(_fsdp_modules(model))


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``DTensor`` (a shard of a distributed tensor; by type name, so torch builds without
    ``torch.distributed`` answer too).

    Example:
        >>> is_dtensor(torch.zeros(1))
        False
    """
    return type(t).__name__ == "DTensor"


def _groups(module: Any) -> list[Any]:
    state = module._get_fsdp_state()  # FSDPModule's own accessor (see the module docstring)
    groups = list(getattr(state, "_fsdp_param_groups", None) or [])
    for group in groups:
        missing = [name for name in _SETTINGS if not hasattr(group, name)]
        if missing:
            raise RuntimeError(
                f"lightning_xai: cannot read FSDP2's settings of torch {torch.__version__} (its parameter groups lack "
                f"{missing}): explaining a model sharded by fully_shard needs a torch version it knows. Use "
                "strategy='ddp' or remove the callback."
            )
    return groups


@contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """The whole of an FSDP2-sharded ``model`` on this rank for the block (collective: every rank enters it, in
    the same order); a model without ``fully_shard`` passes through untouched.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> with gathered(m):
        ...     m(torch.zeros(1, 2)).shape
        torch.Size([1, 2])
    """
    modules = _fsdp_modules(model)
    if model in _GATHERED:  # a sibling callback's explain() inside a step: already whole here
        yield
        return
    if not modules:
        _refuse_sharded(model)  # tensor parallelism without fully_shard
        yield
        return
    saved = [(group, {name: getattr(group, name) for name in _SETTINGS}) for m in modules for group in _groups(m)]
    for group, _ in saved:
        group.post_forward_mesh_info = None  # keep the gathered parameters after forward ...
        group.reshard_after_backward = False  # ... and after backward
        group.reduce_grads = group.all_reduce_grads = False  # the explanation's gradients are its own
    try:
        for m in modules:
            m.unshard()
        _refuse_sharded(model)
        _GATHERED.add(model)
        yield
    finally:
        _GATHERED.discard(model)
        for m in modules:
            m.reshard()
        for group, values in saved:
            for name, value in values.items():
                setattr(group, name, value)


def _refuse_sharded(model: nn.Module) -> None:
    """Raise when a parameter is still a DTensor (tensor parallelism): the same on every rank, so all refuse."""
    still = [name for name, p in model.named_parameters() if is_dtensor(p)]
    if still:
        raise RuntimeError(
            f"lightning_xai: parameters {still[:3]} stay sharded (DTensors) after FSDP's unshard: tensor "
            "parallelism runs collectives inside forward, which the explanations cannot keep in lockstep. Shard "
            "with fully_shard only (ModelParallelStrategy(tensor_parallel_size=1)) or use strategy='ddp'."
        )
