"""lightning_xai: PyTorch Lightning callbacks that explain models while they train and on saved checkpoints.

Example:
    >>> from lightning_xai import GradCAMCallback
    >>> GradCAMCallback(num_samples=4).num_samples
    4
"""

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

__version__ = "0.1.0"

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
    "ProbingCallback",
    "SHAPCallback",
    "ModelInputs",
    "Probe",
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
