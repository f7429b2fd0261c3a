"""lightning_xai: PyTorch Lightning callbacks that explain models while they train and on saved checkpoints.

The public names below are imported on first use (PEP 562 ``__getattr__``): ``import lightning_xai`` and its light
submodules (``lightning_xai.render``, ``lightning_xai.sinks``) do not import Lightning, so the background process
that draws the figures starts in a fraction of a second.

Example:
    >>> from lightning_xai import GradCAMCallback
    >>> GradCAMCallback(num_samples=4).num_samples
    4
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AttentionCallback": "lightning_xai.callbacks.attention",
    "AttributionCallback": "lightning_xai.callbacks.attribution",
    "AttributionDriftCallback": "lightning_xai.callbacks.drift",
    "AttributionStore": "lightning_xai.sinks.store",
    "CalibrationCallback": "lightning_xai.callbacks.calibration",
    "CallbackShell": "lightning_xai.callbacks._shell",
    "Explainer": "lightning_xai.explainers",
    "Explanation": "lightning_xai.explainers",
    "GradCAMCallback": "lightning_xai.callbacks.gradcam",
    "ProbingCallback": "lightning_xai.callbacks.probing",
    "SHAPCallback": "lightning_xai.callbacks.shap",
    "ModelInputs": "lightning_xai.adapters",
    "Probe": "lightning_xai.probe",
    "XAICallback": "lightning_xai.callbacks.base",
    "default_batch_to_inputs": "lightning_xai.adapters",
    "default_forward_fn": "lightning_xai.adapters",
    "get_explainer": "lightning_xai.explainers",
    "list_explainers": "lightning_xai.explainers",
    "load_shap_explanation": "lightning_xai.sinks.shap_io",
    "load_shap_values": "lightning_xai.sinks.shap_io",
    "logits_from_output": "lightning_xai.adapters",
    "register_explainer": "lightning_xai.explainers",
}

__all__ = [
    "AttentionCallback",
    "AttributionCallback",
    "AttributionDriftCallback",
    "AttributionStore",
    "CalibrationCallback",
    "CallbackShell",
    "Explainer",
    "Explanation",
    "GradCAMCallback",
    "ModelInputs",
    "Probe",
    "ProbingCallback",
    "SHAPCallback",
    "XAICallback",
    "default_batch_to_inputs",
    "default_forward_fn",
    "get_explainer",
    "list_explainers",
    "load_shap_explanation",
    "load_shap_values",
    "logits_from_output",
    "register_explainer",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_xai' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from lightning_xai.adapters import ModelInputs, default_batch_to_inputs, default_forward_fn, logits_from_output
    from lightning_xai.callbacks._shell import CallbackShell
    from lightning_xai.callbacks.attention import AttentionCallback
    from lightning_xai.callbacks.attribution import AttributionCallback
    from lightning_xai.callbacks.base import XAICallback
    from lightning_xai.callbacks.calibration import CalibrationCallback
    from lightning_xai.callbacks.drift import AttributionDriftCallback
    from lightning_xai.callbacks.gradcam import GradCAMCallback
    from lightning_xai.callbacks.probing import ProbingCallback
    from lightning_xai.callbacks.shap import SHAPCallback
    from lightning_xai.explainers import Explainer, Explanation, get_explainer, list_explainers, register_explainer
    from lightning_xai.probe import Probe
    from lightning_xai.sinks.shap_io import load_shap_explanation, load_shap_values
    from lightning_xai.sinks.store import AttributionStore
