"""The typed result of every attribution function."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["AttributionResult"]


@dataclass(frozen=True)
class AttributionResult:
    """Attributions of a batch.

    Attributes:
        values: per input, in input order: the input's shape (token ids ``(B, L)``), ``None`` where not explained.
        outputs: the explained score per probe ``f(x)``.
        base_values: ``f(baseline)`` per probe, for methods with a baseline (else ``None``).
        completeness_error: ``|sum(attr) - (f(x) - f(baseline))|`` per probe (integrated gradients, DeepLIFT).
        relative_error: ``completeness_error / |f(x) - f(baseline)|``.
        converged: integrated gradients to a ``completeness_tol``: ``relative_error <= completeness_tol`` per
            probe (``False``: it stopped at ``max_steps``); else ``None``.
        n_steps_used: integrated gradients to a ``completeness_tol``: gradient rows (forward + backward) spent
            per probe; else ``None``.
    """

    values: tuple[Tensor | None, ...]
    outputs: Tensor
    base_values: Tensor | None = None
    completeness_error: Tensor | None = None
    relative_error: Tensor | None = None
    converged: Tensor | None = None
    n_steps_used: Tensor | None = None
