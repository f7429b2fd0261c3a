"""Which explainer AttributionDriftCallback follows: a Grad-CAM family method, SHAP, or ``"auto"``."""

from __future__ import annotations

from typing import Any

from lightning_xai._checks import expected
from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers import Explainer, get_explainer, list_explainers
from lightning_xai.functional import CAM_METHODS

__all__ = ["DRIFT_METHODS", "RENDER_KEYS", "auto_method", "build_explainer", "check_method"]

#: The methods built in: ``"auto"``, every Grad-CAM family method, and SHAP. Any registered explainer is accepted
#: (:func:`lightning_xai.explainers.list_explainers`).
DRIFT_METHODS: tuple[str, ...] = ("auto", *CAM_METHODS, "shap")
#: ``method_kwargs`` that are about drawing, not explaining: the snapshot grid uses them.
RENDER_KEYS = ("mean", "std")


def check_method(method: object) -> str:
    """``"auto"`` or a registered explainer name; else an error listing them.

    Example:
        >>> check_method("layercam")
        'layercam'
    """
    if method != "auto" and method not in list_explainers():
        raise ValueError(expected("method", f"'auto' or a registered explainer, one of {list_explainers()}", method))
    return method  # type: ignore[return-value]


def auto_method(inputs: ModelInputs) -> str:
    """``"gradcam"`` when the model takes an image or a clip (a floating input of 4 or 5 dims), else ``"shap"``
    (token ids, spectrograms, tabular rows: Grad-CAM needs a spatial feature map, SHAP works on any input).

    Example:
        >>> import torch
        >>> auto_method(ModelInputs((torch.zeros(2, 3, 8, 8),))), auto_method(ModelInputs((torch.zeros(2, 5),)))
        ('gradcam', 'shap')
    """
    return "gradcam" if inputs.image_key is not None else "shap"


def build_explainer(method: str, kwargs: dict[str, Any], target_layer: str | None) -> Explainer:
    """The explainer registered as ``method``, built from ``method_kwargs`` (``kwargs``) and ``target_layer``."""
    if target_layer is not None:
        kwargs = {**kwargs, "target_layer": target_layer}
    try:
        return get_explainer(method, **kwargs)
    except TypeError as err:
        if target_layer is not None and "target_layer" in str(err):
            raise ValueError(expected("target_layer", f"None with method={method!r} (it explains no layer)",
                                      target_layer)) from err
        raise ValueError(expected("method_kwargs", f"arguments of the {method!r} explainer", kwargs)
                         + f" ({err})") from err
