"""DeepLIFT's completeness, checked per probe: a loud warning when its values do not add up to
``f(x) - f(baseline)``.

Captum's DeepLift applies the elementwise rescale rule to ``nn.ReLU``/``ELU``/``LeakyReLU``/``Sigmoid``/``Tanh``/
``Softplus`` and its own rules to the non-elementwise ``nn.MaxPool1d/2d/3d`` and ``nn.Softmax``
(``SUPPORTED_NON_LINEAR`` in ``captum.attr._core.deep_lift``). Those two rules do not always conserve the difference:
measured on a ShapesCNN (two conv-ReLU blocks before a max pool over the whole map, trained; 16 probes), the median
relative completeness error is 0.096 and the largest 2.5, while an average pool in its place gives below 1e-4. Layers
captum does not handle at all are named by a separate ``UserWarning`` before the attribution runs.
"""

from __future__ import annotations

import warnings

from torch import Tensor, nn

from lightning_xai._checks import expected

__all__ = ["NON_ELEMENTWISE", "check_tolerance", "non_elementwise_layers", "warn_incomplete"]

#: the layer classes captum's DeepLift gives a rule that is not the elementwise rescale rule
NON_ELEMENTWISE: tuple[type[nn.Module], ...] = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Softmax)
_SHOWN = 8  # probes named in the warning


def check_tolerance(name: str, value: object) -> float | None:
    """``value`` as a float if it is a number larger than 0, ``None`` if it is ``None``, else a ``ValueError``.

    Example:
        >>> check_tolerance("completeness_tol", 0.05), check_tolerance("completeness_tol", None)
        (0.05, None)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(expected(name, "a number larger than 0 or None", value))
    return float(value)


def non_elementwise_layers(model: nn.Module) -> list[str]:
    """``"name (Class)"`` of every submodule of ``model`` that captum's DeepLift treats with a non-elementwise rule.

    Example:
        >>> non_elementwise_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)))
        ['2 (MaxPool2d)']
    """
    return [f"{name or type(model).__name__} ({type(m).__name__})" for name, m in model.named_modules()
            if isinstance(m, NON_ELEMENTWISE)]


def warn_incomplete(relative_error: Tensor | None, model: nn.Module, tol: float | None, method: str) -> Tensor | None:
    """Warn (``RuntimeWarning``) when a probe's ``relative_error`` (``|sum(attr) - (f(x) - f(baseline))| /
    |f(x) - f(baseline)|``) exceeds ``tol``, naming the probes, the layers of ``model`` that likely break the
    conservation and the way out; returns the per-probe mask of the probes over ``tol`` (``None``: nothing checked).

    Example:
        >>> import torch
        >>> warn_incomplete(torch.tensor([1e-6, 2e-3]), nn.Linear(2, 1), 0.05, "deeplift")
        tensor([False, False])
    """
    if tol is None or relative_error is None:
        return None
    over = ~(relative_error <= tol)  # a NaN error is over the tolerance: it did not add up
    if bool(over.any()):
        probes = over.nonzero().flatten().tolist()
        shown = ", ".join(map(str, probes[:_SHOWN])) + (", ..." if len(probes) > _SHOWN else "")
        layers = non_elementwise_layers(model)
        cause = (f"captum's max-pool/softmax rules (not the elementwise rescale rule) at {', '.join(layers)} "
                 "likely break it" if layers else
                 "no MaxPool/Softmax layer is in the model: look for the nonlinear operations captum differentiates "
                 "plainly (named in the warning about layers it does not handle)")
        warnings.warn(
            f"{method}: the attributions of {len(probes)} of {len(over)} probes (batch positions {shown}) do not add "
            f"up to f(x) - f(baseline): relative completeness error median {float(relative_error.median()):.3g}, "
            f"max {float(relative_error.max()):.3g}, above completeness_tol={tol:g}; {cause}. Use "
            "integrated_gradients (integrated to its completeness_tol), or set completeness_tol (None: no check).",
            RuntimeWarning, stacklevel=3)
    return over
