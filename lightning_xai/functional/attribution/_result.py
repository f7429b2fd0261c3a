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
    """

    values: tuple[Tensor | None, ...]
    outputs: Tensor
    base_values: Tensor | None = None
    completeness_error: Tensor | None = None
    relative_error: Tensor | None = None
