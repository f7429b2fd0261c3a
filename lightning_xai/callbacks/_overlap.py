"""Explaining alongside training: an epoch's explanation on a snapshot of the model, in a background thread.

During ``fit`` a probe-based callback's explanation of epoch ``e`` needs the weights of the end of epoch ``e``,
which training changes from the next step on. With ``overlap`` the callback copies the model at the epoch end (a
deep copy sharing nothing with it but the trainer), checks that the copy computes the same outputs on the probe
and that the model's forward does not draw from the global random streams (an explanation in a thread cannot
restore them while training draws from them too), then explains the copy in one background thread while the next
epoch trains; the artifacts are written and the scalars logged at the epoch's own step as soon as the main loop
picks the result up (at a training step, the next explanation, the end of fit, or an error or Ctrl+C).

What is given up: the scalars reach ``trainer.callback_metrics`` only when picked up, so a ``ModelCheckpoint``,
``EarlyStopping`` or scheduler that monitors an ``xai/`` metric rules it out (checked at each epoch end), and so
do DDP and sharded runs (collectives), ``validate``/``test`` (nothing to overlap), and explainers that may not run
on a copy (``Explainer.overlappable``). ``"auto"`` also wants a spare core (fewer torch threads than usable
cores), a model on the CPU and at most :data:`AUTO_MAX_BYTES` of parameters and buffers, and ``on_error="warn"``.
One background thread serves every callback: their jobs run one after another.
"""

from __future__ import annotations

import copy
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from lightning_xai._priority import lower_priority

__all__ = ["AUTO_MAX_BYTES", "Job", "refusal", "snapshot", "submit", "draws_random", "same_outputs"]

AUTO_MAX_BYTES = 256 * 2**20  # "auto" copies models up to this size (parameters and buffers)
_LOCK = threading.Lock()
_EXECUTOR: ThreadPoolExecutor | None = None


@dataclass
class Job:
    """One explanation running in the background: its future and what the main thread needs to finish it."""

    future: Future[Any]
    epoch: int
    context: dict[str, Any] = field(default_factory=dict)


def submit(fn: Callable[[], Any], epoch: int, **context: Any) -> Job:
    """Run ``fn()`` in the shared background thread; the :class:`Job` carries its future, ``(result, seconds)``.

    Example:
        >>> job = submit(lambda: 2 + 2, epoch=0)
        >>> job.future.result()[0]
        4
    """
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning_xai-explain",
                                           initializer=lower_priority)  # the loop keeps its core
        executor = _EXECUTOR

    def timed() -> tuple[Any, float]:
        start = time.perf_counter()
        return fn(), time.perf_counter() - start

    return Job(executor.submit(timed), epoch, context)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _monitors(trainer: pl.Trainer) -> list[str]:
    """``xai/`` metrics something on the trainer monitors (callbacks' ``monitor``, schedulers' ``monitor``)."""
    found = [f"{type(cb).__name__}(monitor={cb.monitor!r})" for cb in trainer.callbacks  # type: ignore[attr-defined]
             if isinstance(getattr(cb, "monitor", None), str) and cb.monitor.startswith("xai/")]
    for config in getattr(trainer, "lr_scheduler_configs", None) or []:
        if isinstance(config.monitor, str) and config.monitor.startswith("xai/"):
            found.append(f"lr_scheduler(monitor={config.monitor!r})")
    return found


def refusal(overlap: bool | str, trainer: pl.Trainer, model: nn.Module, stage: str, on_error: str,
            overlappable: bool) -> str | None:
    """Why this epoch's explanation cannot run alongside training (``None``: it can).

    Example:
        >>> refusal(False, None, nn.Linear(2, 2), "fit", "warn", True)
        'overlap=False'
    """
    if overlap is False:
        return "overlap=False"
    if stage != "fit":
        return f"{stage} has no training to overlap with"
    if trainer.world_size > 1:
        return f"{trainer.world_size} processes (the explanation is collective)"
    if not overlappable:
        return "the explainer may not run on a copy of the model (Explainer.overlappable is False)"
    monitored = _monitors(trainer)
    if monitored:
        return f"{', '.join(monitored)} needs the scalars in the epoch they are computed"
    if overlap == "auto":
        if on_error == "raise":
            return "on_error='raise' (errors are raised where they happen)"
        tensors = [*model.parameters(), *model.buffers()]
        if any(t.device.type != "cpu" for t in tensors):
            return "the model is not on the CPU"
        if sum(t.numel() * t.element_size() for t in tensors) > AUTO_MAX_BYTES:
            return f"the model is larger than {AUTO_MAX_BYTES // 2**20} MiB (a copy of it is explained)"
        if torch.get_num_threads() >= _usable_cores():
            return (f"no spare core ({torch.get_num_threads()} torch threads on {_usable_cores()} usable cores)")
    return None


def snapshot(model: nn.Module, trainer: pl.Trainer | None) -> nn.Module:
    """A deep copy of ``model`` sharing only ``trainer`` with it, made outside inference mode (its parameters are
    ordinary tensors).

    Example:
        >>> net = nn.Linear(2, 2)
        >>> copy_ = snapshot(net, None)
        >>> copy_ is not net and torch.equal(copy_.weight, net.weight)
        True
    """
    memo: dict[int, Any] = {} if trainer is None else {id(trainer): trainer}
    with torch.inference_mode(False), torch.no_grad():
        return copy.deepcopy(model, memo)


def _rng_states() -> tuple[bytes, Any, Any]:
    numpy_state = np.random.get_state()
    return (bytes(torch.get_rng_state().numpy()), (numpy_state[1].tobytes(), numpy_state[2:]), random.getstate())


def draws_random(fn: Callable[[], Any]) -> tuple[Any, bool]:
    """``fn()`` and whether it drew from the global random streams (torch CPU, numpy, ``random``).

    Example:
        >>> draws_random(lambda: 1)[1], draws_random(lambda: torch.rand(1))[1]
        (False, True)
    """
    before = _rng_states()
    out = fn()
    return out, _rng_states() != before


def same_outputs(a: Any, b: Any) -> bool:
    """Do two model outputs (tensors, or tuples / dicts / ``ModelOutput`` of them) agree (to float rounding)?

    Example:
        >>> same_outputs(torch.ones(2), torch.ones(2)), same_outputs((torch.ones(2),), (torch.zeros(2),))
        (True, False)
    """
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
            return False
        if not a.is_floating_point():
            return torch.equal(a, b)
        return bool(torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6, equal_nan=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_outputs(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same_outputs(x, y) for x, y in zip(a, b))
    return a == b
