"""Which explainer AttributionDriftCallback follows: a Grad-CAM family method, SHAP, or ``"auto"``."""

from __future__ import annotations

from typing import Any

from lightning_xai._checks import expected
from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks.gradcam import GradCAMCallback
from lightning_xai.callbacks.shap import SHAPCallback
from lightning_xai.functional import CAM_METHODS

__all__ = ["DRIFT_METHODS", "auto_method", "build_explainer"]

#: Attribution methods the drift callback can follow: ``"auto"``, every Grad-CAM family method, and SHAP.
DRIFT_METHODS: tuple[str, ...] = ("auto", *CAM_METHODS, "shap")


def auto_method(inputs: ModelInputs) -> str:
    """``"gradcam"`` when the model takes an image or a clip (a floating input of 4 or 5 dims), else ``"shap"``
    (token ids, spectrograms, tabular rows: Grad-CAM needs a spatial feature map, SHAP works on any input).

    Example:
        >>> import torch
        >>> auto_method(ModelInputs((torch.zeros(2, 3, 8, 8),))), auto_method(ModelInputs((torch.zeros(2, 5),)))
        ('gradcam', 'shap')
    """
    return "gradcam" if inputs.image_key is not None else "shap"


def build_explainer(method: str, shared: dict[str, Any], extra: dict[str, Any],
                    target_layer: str | None) -> GradCAMCallback | SHAPCallback:
    """The callback whose explanation code the drift callback runs, configured by ``method_kwargs`` (``extra``)."""
    if method == "shap":
        if target_layer is not None:
            raise ValueError(expected("target_layer", "None with method='shap'", target_layer))
        return SHAPCallback(**shared, **extra)
    return GradCAMCallback(**shared, methods=(method,), target_layer=target_layer, **extra)
