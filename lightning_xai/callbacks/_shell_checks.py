"""CallbackShell's own argument checks (``name=``, ``output=``), in the project's one error format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.adapters import resolve_callable

__all__ = ["check_name", "check_output"]


def check_name(name: Any) -> str:
    """``name=``: the folder and tag namespace of one instance; it must stay one folder inside ``<log_dir>/xai``.

    Example:
        >>> check_name("shap_student")
        'shap_student'
    """
    allowed = "None or a name of 1-64 letters, digits, '_', '-', '.' that does not start with '.'"
    if not isinstance(name, str) or not 0 < len(name) <= 64 or name.startswith(".") or not all(
            c.isascii() and (c.isalnum() or c in "_-.") for c in name):
        raise ValueError(expected("name", allowed, name))
    return name


def check_output(output: Any) -> str | int | Callable[[Any], Tensor] | None:
    """``output=``: ``None``, a key, an index, a callable, or a dotted path (``"pkg.mod.fn"``) to a callable.

    Example:
        >>> check_output("logits"), check_output(0)
        ('logits', 0)
    """
    if isinstance(output, str) and "." in output:
        return resolve_callable("output", output)
    if output is None or callable(output) or isinstance(output, str) or (
            isinstance(output, int) and not isinstance(output, bool)):
        return output
    raise ValueError(expected("output", "None, an output key (str), a tuple index (int) or a callable", output))
