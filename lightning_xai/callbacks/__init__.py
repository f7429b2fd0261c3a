"""Thin Lightning shells: schedule, probe set, state and rank gating around the functional core."""

from lightning_xai.callbacks.base import XAICallback
from lightning_xai.callbacks.gradcam import GradCAMCallback

__all__ = ["GradCAMCallback", "XAICallback"]
