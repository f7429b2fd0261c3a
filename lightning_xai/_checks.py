"""Argument checks shared by every callback and functional op.

One error formula everywhere: ``Expected argument `name` to be <what is allowed>, but got <value>.``
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "check_choice",
    "check_choices",
    "check_positive_int",
    "check_non_negative_int",
    "check_probability",
    "expected",
]


def expected(name: str, allowed: str, got: Any) -> str:
    """Build the one error message format used across the library.

    Example:
        >>> expected("n_bins", "an integer larger than 0", 0)
        'Expected argument `n_bins` to be an integer larger than 0, but got 0.'
    """
    return f"Expected argument `{name}` to be {allowed}, but got {got!r}."


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an ``int`` > 0, else raise ``ValueError``.

    Example:
        >>> check_positive_int("num_samples", 8)
        8
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(expected(name, "an integer larger than 0", value))
    return value


def check_non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an ``int`` >= 0, else raise ``ValueError``.

    Example:
        >>> check_non_negative_int("seed", 0)
        0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(expected(name, "an integer of at least 0", value))
    return value


def check_probability(name: str, value: Any) -> float:
    """Return ``value`` as float if it lies in ``[0, 1]``, else raise ``ValueError``.

    Example:
        >>> check_probability("alpha", 0.5)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(expected(name, "a number in [0, 1]", value))
    return float(value)


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise ``ValueError`` listing them.

    Example:
        >>> check_choice("on_error", "warn", ("warn", "raise"))
        'warn'
    """
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(expected(name, f"one of {list(allowed)}", value))
    return value


def check_choices(name: str, values: Any, allowed: Sequence[Any]) -> tuple[Any, ...]:
    """Return ``values`` (a str or a sequence of them) as a non-empty tuple of allowed entries.

    Example:
        >>> check_choices("methods", "gradcam", ("gradcam", "layercam"))
        ('gradcam',)
    """
    if isinstance(values, str):
        values = (values,)
    if not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(expected(name, f"a non-empty list drawn from {list(allowed)}", values))
    for v in values:
        if v not in allowed:
            raise ValueError(expected(name, f"a list drawn from {list(allowed)}", list(values)))
    return tuple(values)
