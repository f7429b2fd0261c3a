"""Thin Lightning shells: schedule, probe set, state and rank gating around the functional core."""

from lightning_xai.callbacks._shell import CallbackShell
from lightning_xai.callbacks.attention import AttentionCallback
from lightning_xai.callbacks.attribution import AttributionCallback
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.callbacks.calibration import CalibrationCallback
from lightning_xai.callbacks.gradcam import GradCAMCallback
from lightning_xai.callbacks.probing import ProbingCallback
from lightning_xai.callbacks.shap import SHAPCallback

__all__ = ["AttentionCallback", "AttributionCallback", "CalibrationCallback", "CallbackShell", "GradCAMCallback",
           "ProbingCallback", "SHAPCallback", "XAICallback"]
