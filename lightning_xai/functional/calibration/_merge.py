"""Combining calibration states: merging two, and the summable tensors a DDP all-reduce adds up.

Pure torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.functional.calibration._binning import _inference_needed, _settle
from lightning_xai.functional.calibration._reservoir import _reservoir_extend
from lightning_xai.functional.calibration._state import (  # noqa: F401 - calibration_state: the examples use it
    CalibrationState,
    calibration_state,
)
from lightning_xai.functional.calibration._update import calibration_update  # noqa: F401  (examples)

__all__ = ["calibration_merge", "portable_state", "state_from_tensors", "state_tensors"]


def _check_compatible(a: CalibrationState, b: CalibrationState) -> None:
    for name in ("n_bins", "adaptive_sample", "num_classes", "per_class"):
        if getattr(a, name) != getattr(b, name):
            raise ValueError(expected("b", f"a state with {name}={getattr(a, name)!r} like `a`",
                                      getattr(b, name)))
    if a.task is not None and b.task is not None and a.task != b.task:
        raise ValueError(expected("b", f"a state of task {a.task!r} like `a`", b.task))


def calibration_merge(a: CalibrationState, b: CalibrationState) -> CalibrationState:
    """A new state holding the statistics of both ``a`` and ``b`` (on ``a``'s device); neither is changed.

    The bins, Brier and NLL sums and counts add up exactly. The reservoir keeps the ``adaptive_sample``
    smallest keys of both samples, which is again a uniform sample of the union -- but not the one a single
    stream over the same data would have drawn, since the two states drew their own keys; and if ``a`` and
    ``b`` share a seed and batch sizes their keys coincide, so seed them differently. ``ace`` after a merge is
    therefore an estimate; everything else is exact.

    Args:
        a: A state.
        b: A state with the same ``n_bins``, ``num_classes``, ``per_class``, ``adaptive_sample`` (and task).

    Returns:
        The merged :class:`CalibrationState`; its generator continues from ``a``'s.

    Raises:
        ValueError: If the two states are not compatible.

    Example:
        >>> a = calibration_update(calibration_state(2, adaptive_sample=0), torch.tensor([0.2, 0.9]),
        ...                        torch.tensor([0, 1]), "binary")
        >>> b = calibration_update(calibration_state(2, adaptive_sample=0), torch.tensor([0.7]),
        ...                        torch.tensor([0]), "binary")
        >>> calibration_merge(a, b).counts
        tensor([1., 2., 0.], dtype=torch.float64)
    """
    if not isinstance(a, CalibrationState):
        raise TypeError(expected("a", "a CalibrationState", type(a).__name__))
    if not isinstance(b, CalibrationState):
        raise TypeError(expected("b", "a CalibrationState", type(b).__name__))
    _check_compatible(a, b)
    _settle(a)
    _settle(b)
    device = a.device
    generator = None
    if a.generator is not None:
        generator = torch.Generator(device=a.generator.device)
        generator.set_state(a.generator.get_state())
    out = CalibrationState(
        n_bins=a.n_bins,
        table=a.table + b.table.to(device),
        nonfinite=a.nonfinite + b.nonfinite.to(device),
        class_bins=None if a.class_bins is None else a.class_bins + b.class_bins.to(device),  # type: ignore[union-attr]
        sample=a.sample.clone(),
        sample_fill=a.sample_fill,
        sample_pushed=a.sample_pushed,
        sample_threshold=min(a.sample_threshold, b.sample_threshold),
        adaptive_sample=a.adaptive_sample,
        seed=a.seed,
        generator=generator,
        num_classes=a.num_classes,
        task=a.task if a.task is not None else b.task,
        seen=a.seen + b.seen,
        input_mismatch=a.input_mismatch or b.input_mismatch,
    )
    if b.sample_fill:
        _reservoir_extend(out, b.sample[:b.sample_fill].to(device).unbind(dim=1))  # type: ignore[arg-type]
    out.sample_pushed = a.sample_pushed + b.sample_pushed
    return out


def portable_state(state: CalibrationState) -> CalibrationState:
    """A copy of ``state`` on the CPU without its generator (waiting predictions binned first): picklable, to
    gather the states of several processes and :func:`calibration_merge` them into one (the reservoir too, which
    an all-reduce of :func:`state_tensors` cannot combine). ``state`` is not changed.

    Example:
        >>> import pickle
        >>> a = calibration_update(calibration_state(2, adaptive_sample=4, seed=1), torch.tensor([0.2, 0.9]),
        ...                        torch.tensor([0, 1]), "binary")
        >>> b = pickle.loads(pickle.dumps(portable_state(a)))
        >>> calibration_merge(a, b).counts.tolist(), b.generator is None
        ([2.0, 2.0, 0.0], True)
    """
    _settle(state)
    copied = {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if f.init}
    for name, value in copied.items():
        if isinstance(value, Tensor):
            copied[name] = value.detach().to("cpu", copy=True)
    copied.update(generator=None, cache={})
    return CalibrationState(**copied)


def state_tensors(state: CalibrationState) -> list[Tensor]:
    """The state's summable tensors, in a fixed order, for an all-reduce with ``sum`` across processes.

    They are the state's own float64 tensors (not copies, and with every waiting prediction binned):
    ``bins``, ``nonfinite`` and, with ``per_class``, ``class_bins``. The reservoir sample is not summable and
    stays per-process (gather the states and combine them with :func:`calibration_merge` if a global ``ace``
    is wanted).

    Args:
        state: A :class:`CalibrationState`.

    Returns:
        List of tensors; write reduced copies back with :func:`state_from_tensors`.

    Example:
        >>> state = calibration_state(n_bins=3, adaptive_sample=0)
        >>> [tuple(t.shape) for t in state_tensors(state)]
        [(4, 5), ()]
    """
    return [state.bins, state.nonfinite] + ([state.class_bins] if state.class_bins is not None else [])


def state_from_tensors(state: CalibrationState, tensors: Sequence[Tensor]) -> CalibrationState:
    """Write ``tensors`` (shaped like :func:`state_tensors` of ``state``) back into ``state``, in place.

    Args:
        state: The state to overwrite.
        tensors: The (reduced) tensors, in the order of :func:`state_tensors`.

    Returns:
        ``state``.

    Raises:
        ValueError: If the number or shapes of ``tensors`` do not match.

    Example:
        >>> state = calibration_state(n_bins=1, adaptive_sample=0)
        >>> reduced = [t + 1 for t in state_tensors(state)]  # e.g. after all_reduce
        >>> state_from_tensors(state, reduced).counts
        tensor([1., 1.], dtype=torch.float64)
    """
    own = state_tensors(state)
    shapes = [tuple(t.shape) for t in own]
    given = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in tensors]
    if given != shapes:
        raise ValueError(expected("tensors", f"tensors shaped {shapes} like state_tensors(state)", given))
    with torch.inference_mode() if _inference_needed(state) else contextlib.nullcontext():
        for mine, theirs in zip(own, tensors):
            mine.copy_(theirs)
    return state
