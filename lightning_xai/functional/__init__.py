"""Pure torch core: attribution engines, localisation metrics, hook capture, target resolution.

No Lightning, no matplotlib.
"""

from lightning_xai.functional._guard import explanation_mode, observer_guard
from lightning_xai.functional._layers import (
    find_target_layer,
    resolve_layer,
    swin_reshape_transform,
    token_reshape_transform,
    video_reshape_transform,
    vit_reshape_transform,
)
from lightning_xai.functional.cam import (
    CAM_METHODS,
    GRADIENT_CAM_METHODS,
    REFERENCE_CAM_METHODS,
    cam,
    grad_cam,
    reference_cam,
)

__all__ = [
    "CAM_METHODS",
    "GRADIENT_CAM_METHODS",
    "REFERENCE_CAM_METHODS",
    "cam",
    "explanation_mode",
    "find_target_layer",
    "grad_cam",
    "observer_guard",
    "reference_cam",
    "resolve_layer",
    "swin_reshape_transform",
    "token_reshape_transform",
    "video_reshape_transform",
    "vit_reshape_transform",
]

from lightning_xai.functional.localization import energy_in_mask, pointing_game, zhang_tolerance

__all__ += ["energy_in_mask", "pointing_game", "zhang_tolerance"]

from lightning_xai.functional.calibration import (
    CalibrationState,
    brier_score,
    calibration_compute,
    calibration_merge,
    calibration_state,
    calibration_update,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    portable_state,
    reliability_bins,
    state_from_tensors,
    state_tensors,
)

__all__ += [
    "CalibrationState",
    "brier_score",
    "calibration_compute",
    "calibration_merge",
    "calibration_state",
    "calibration_update",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "portable_state",
    "reliability_bins",
    "state_from_tensors",
    "state_tensors",
]

from lightning_xai.functional.shap import (
    EmbeddingSwap,
    ShapResult,
    embedding_hook,
    expected_gradients,
    find_embedding_layer,
    gini,
    modality_shares,
    shap_gradient_reference,
)

__all__ += [
    "EmbeddingSwap",
    "ShapResult",
    "embedding_hook",
    "expected_gradients",
    "find_embedding_layer",
    "gini",
    "modality_shares",
    "shap_gradient_reference",
]
from lightning_xai.functional.shap._peers import shap_deep, shap_kernel, shap_partition

__all__ += ["shap_deep", "shap_kernel", "shap_partition"]

from lightning_xai.functional.faithfulness import deletion_auc, deletion_curve, insertion_auc, insertion_curve

__all__ += ["deletion_auc", "deletion_curve", "insertion_auc", "insertion_curve"]

from lightning_xai.functional.attention import ATTENTION_METHODS, capture_attention, grad_rollout, rollout

__all__ += ["ATTENTION_METHODS", "capture_attention", "grad_rollout", "rollout"]
