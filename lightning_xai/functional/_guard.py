"""Leave the model as you found it: the observer guard every explanation runs inside.

Pure torch. Saves and restores every submodule's ``training`` flag, each parameter's ``requires_grad`` and
``.grad`` (object and values), every module-level and parameter-level hook dict (and the flags saying hooks were
installed, such as transformers' ``_output_capturing_hooks_installed``: hooks removed with the flag left set would
silently stop ``output_attentions=True`` from working), and the global RNG states of
torch (CPU and initialised CUDA devices), numpy and ``random``. Also leaves ``torch.inference_mode`` and
autocast, and enables grad, so that explanations can differentiate inside Lightning's evaluation loops.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["observer_guard", "explanation_mode", "rng_left_alone"]

_MODULE_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
#: instance attributes that record hooks installed in a module (restored with the hook dicts)
_HOOK_FLAGS = ("_output_capturing_hooks_installed",)
_ABSENT = object()


_THREAD = threading.local()  # .rng_left_alone: guards in this thread neither save nor restore the global RNG


@contextlib.contextmanager
def rng_left_alone() -> Iterator[None]:
    """Every guard entered in this thread (nested ones included: the functional engines guard themselves) leaves
    the global RNG states alone instead of restoring them. For work in a thread beside training: a restore there
    would rewind the draws the training loop made meanwhile (its sampler's shuffle, dropout). The work must then not
    draw from them itself (callbacks/_overlap.py checks the model's forward; overlappable explainers do not).

    Example:
        >>> with rng_left_alone():
        ...     with observer_guard(nn.Linear(2, 2)):
        ...         before = torch.get_rng_state()
        ...         _ = torch.rand(1)
        >>> torch.equal(torch.get_rng_state(), before)  # the draw was not rewound
        False
    """
    previous = getattr(_THREAD, "rng_left_alone", False)
    _THREAD.rng_left_alone = True
    try:
        yield
    finally:
        _THREAD.rng_left_alone = previous


def _save_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "random": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def observer_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block that may touch ``model`` and restore everything it could have changed, even on error.

    Restored: ``training`` of every submodule, ``requires_grad`` and ``.grad`` of every parameter, every hook
    dict of every submodule and parameter, and the global RNG states (torch, CUDA, numpy, random) unless the
    thread runs under :func:`rng_left_alone`.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with observer_guard(net):
        ...     _ = net.eval()
        ...     _ = net[0].register_forward_hook(lambda *a: None)
        ...     _ = torch.rand(1)
        >>> net.training, len(net[0]._forward_hooks)
        (True, 0)
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    hooks = [
        {name: dict(getattr(m, name)) for name in _MODULE_HOOK_DICTS if isinstance(getattr(m, name, None), dict)}
        for m in modules
    ]
    flags = [{name: vars(m).get(name, _ABSENT) for name in _HOOK_FLAGS} for m in modules]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    grad_values = [None if g is None else g.detach().clone() for g in grads]
    param_hooks = [None if p._backward_hooks is None else dict(p._backward_hooks) for p in params]
    saved_rng = None if getattr(_THREAD, "rng_left_alone", False) else _save_rng()
    try:
        yield model
    finally:
        for m, flag, saved, installed in zip(modules, training, hooks, flags):
            m.training = flag
            for name, value in saved.items():
                current = getattr(m, name)
                current.clear()
                current.update(value)
            for name, value in installed.items():
                if value is _ABSENT:
                    vars(m).pop(name, None)
                else:
                    vars(m)[name] = value
        with torch.no_grad():
            for p, flag, grad, value, ph in zip(params, requires_grad, grads, grad_values, param_hooks):
                p.requires_grad_(flag)
                if grad is not None and value is not None and not torch.equal(grad, value):
                    grad.copy_(value)
                p.grad = grad
                if ph is None:
                    p._backward_hooks = None
                elif p._backward_hooks is not None:
                    p._backward_hooks.clear()
                    p._backward_hooks.update(ph)
        if saved_rng is not None:
            _restore_rng(saved_rng)


@contextlib.contextmanager
def explanation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Guard ``model`` and set it up for explanation: eval mode, grad enabled, no inference mode, no autocast.

    Inputs must be created (or cloned) inside the block so that they are ordinary tensors, not inference tensors.

    Example:
        >>> net = nn.Linear(3, 1).train()
        >>> with torch.inference_mode(), explanation_mode(net):
        ...     x = torch.ones(1, 3, requires_grad=True)
        ...     g, = torch.autograd.grad(net(x).sum(), x)
        >>> net.training, g.shape
        (True, torch.Size([1, 3]))
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(observer_guard(model))
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        for device_type in ("cpu", "cuda"):
            if device_type == "cuda" and not torch.cuda.is_available():
                continue
            stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        model.eval()
        yield model
