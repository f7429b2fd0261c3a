"""The method tables of the CAM engines: which methods run in pure torch, which through pytorch_grad_cam.

Shared by :func:`~lightning_xai.functional.cam.grad_cam`, :func:`~lightning_xai.functional.cam.reference_cam` and
:func:`~lightning_xai.functional.cam.cam`.
"""

from __future__ import annotations

__all__ = ["CAM_METHODS", "GRADIENT_CAM_METHODS", "REFERENCE_CAM_METHODS"]

GRADIENT_CAM_METHODS: tuple[str, ...] = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "gradcamelementwise",
)

# Every other pytorch_grad_cam 1.5.7 method that explains a classifier from one target layer.
# Left out on purpose:
#   FinerCAM   - its point is a target built from the predicted class and its nearest classes; with an
#                explicit class target it is exactly its base GradCAM (so "gradcam" already covers it).
#   RefineCAM  - a product over several target layers; with one layer it is GradCAM++ (and it is not a
#                context manager, so its hooks could not be released reliably).
#   DeepFeatureFactorization, GuidedBackpropReLUModel - not class activation maps of a target.
# Notes: "fullgrad" ignores `target_layer` (it uses every Conv2d/BatchNorm2d bias); "shapleycam" needs a
# twice-differentiable graph and, in 1.5.7, CNN feature maps (it does not reshape token activations);
# "randomcam" draws from numpy's RNG, which the guard restores, so repeated calls give the same map.
REFERENCE_CAM_METHODS: dict[str, str] = {
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "fullgrad": "FullGrad",
    "randomcam": "RandomCAM",
    "kpcacam": "KPCA_CAM",
    "shapleycam": "ShapleyCAM",
    "fem": "FEM",
    "segeigencam": "SegEigenCAM",
    "sess": "SESS",
}

CAM_METHODS: tuple[str, ...] = GRADIENT_CAM_METHODS + tuple(REFERENCE_CAM_METHODS)

# pytorch_grad_cam classes of our gradient family, used by `reference_cam` (the tests' reference).
_GRADIENT_REFERENCE_CLASSES: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "gradcamelementwise": "GradCAMElementWise",
}
# Methods that call the model on batches of perturbed copies of one sample: run per sample for multi-input
# models, so that the fixed inputs can be expanded to the perturbed batch.
_PER_SAMPLE_METHODS = ("scorecam", "ablationcam", "sess")
# Methods whose pytorch_grad_cam 1.5.7 code cannot apply a reshape_transform (token models): FullGrad reads
# raw Conv2d/BatchNorm2d gradients, ShapleyCAM reshapes its weights but not the activations it multiplies.
_NO_RESHAPE_METHODS = ("fullgrad", "shapleycam")
# Methods that draw tqdm progress bars on stderr.
_NOISY_METHODS = ("scorecam", "ablationcam")
