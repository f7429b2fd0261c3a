"""Thin Lightning shells: schedule, probe set, state and rank gating around the functional core.

Imported on first use (PEP 562), like the package itself: a private module below (the emitters' figure builders,
unpickled by the background figure worker) can be imported without importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AttentionCallback": "lightning_xai.callbacks.attention",
    "AttributionCallback": "lightning_xai.callbacks.attribution",
    "CalibrationCallback": "lightning_xai.callbacks.calibration",
    "CallbackShell": "lightning_xai.callbacks._shell",
    "GradCAMCallback": "lightning_xai.callbacks.gradcam",
    "ProbingCallback": "lightning_xai.callbacks.probing",
    "SHAPCallback": "lightning_xai.callbacks.shap",
    "XAICallback": "lightning_xai.callbacks.base",
}

__all__ = [
    "AttentionCallback",
    "AttributionCallback",
    "CalibrationCallback",
    "CallbackShell",
    "GradCAMCallback",
    "ProbingCallback",
    "SHAPCallback",
    "XAICallback",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_xai.callbacks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from lightning_xai.callbacks._shell import CallbackShell
    from lightning_xai.callbacks.attention import AttentionCallback
    from lightning_xai.callbacks.attribution import AttributionCallback
    from lightning_xai.callbacks.base import XAICallback
    from lightning_xai.callbacks.calibration import CalibrationCallback
    from lightning_xai.callbacks.gradcam import GradCAMCallback
    from lightning_xai.callbacks.probing import ProbingCallback
    from lightning_xai.callbacks.shap import SHAPCallback
