"""What every SHAP engine returns: :class:`ShapResult`, built with its completeness check by :func:`_result`.

Shared by :func:`~lightning_xai.functional.shap.expected_gradients`,
:func:`~lightning_xai.functional.shap.shap_gradient_reference` and the peer engines (``shap_deep``,
``shap_kernel``, ``shap_partition``). Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.functional.shap._rows import _relative
from lightning_xai.functional.shap._inputs import FLOAT, TOKEN, Prepared

__all__ = ["ShapResult"]


@dataclass(frozen=True)
class ShapResult:
    """Attributions with their completeness check.

    Attributes:
        values: One float32 tensor per input, shaped like it (token inputs: ``(B, L)``, summed over the
            embedding dimension); zeros for inputs passed through unexplained.
        base_values: ``(B,)`` ``E f(background)`` for each probe's target.
        outputs: ``(B,)`` ``f(x)`` for the target.
        completeness_error: ``(B,)`` ``|sum(phi) - (f(x) - base)|``.
        relative_error: ``(B,)`` that divided by ``|f(x) - base|`` (guarded against 0).
        nsamples: ``(B,)`` gradient points (forward + backward rows) spent on each probe.
        converged: ``(B,)`` bool, ``relative_error <= completeness_tol``; ``None`` without a tolerance.
        explained: Per input, whether it was explained.
    """

    values: tuple[Tensor, ...]
    base_values: Tensor
    outputs: Tensor
    completeness_error: Tensor
    relative_error: Tensor
    nsamples: Tensor
    converged: Tensor | None
    explained: tuple[bool, ...]

    #: the fields with one entry per probe (joined by rows when a batch is explained in parts)
    row_fields: ClassVar[tuple[str, ...]] = ("values", "base_values", "outputs", "completeness_error",
                                             "relative_error", "nsamples", "converged")


def _result(
    prep: Prepared, phis: list[Tensor], points: Tensor, fx: Tensor, fbg: Tensor, tol: float | None
) -> ShapResult:
    values, k = [], 0
    for role, x in zip(prep.roles, prep.inputs):
        if role in (FLOAT, TOKEN):
            values.append(phis[k].float().to(prep.out_device))
            k += 1
        else:
            values.append(torch.zeros(x.shape, dtype=torch.float32, device=prep.out_device))
    base = fbg.mean(1)
    total = sum(phi.flatten(1).sum(1).double().cpu() for phi in phis)
    err = (total - (fx - base)).abs()
    rel = _relative(err, fx, base)
    converged = None if tol is None else (rel <= tol).to(prep.out_device)
    return ShapResult(
        values=tuple(values),
        base_values=base.float().to(prep.out_device),
        outputs=fx.float().to(prep.out_device),
        completeness_error=err.float().to(prep.out_device),
        relative_error=rel.float().to(prep.out_device),
        nsamples=points.to(prep.out_device),
        converged=converged,
        explained=tuple(role in (FLOAT, TOKEN) for role in prep.roles),
    )


def _check_generator(generator: Any) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(expected("generator", "a CPU torch.Generator or None", generator))
    return generator
