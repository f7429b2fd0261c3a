"""Class activation maps: the gradient family in pure torch, every other method through pytorch_grad_cam.

The gradient family (:data:`GRADIENT_CAM_METHODS`) shares one template, :func:`grad_cam`: a forward hook
captures the target layer's output (autograd records only from there on), ``torch.autograd.grad`` takes the
target scores' gradient with respect to that output only (never ``.backward()``, parameter ``.grad`` is never
written, frozen parameters are fine), one small function per method turns activations and gradients into a
map, and the map is resized to the input and normalised exactly as pytorch_grad_cam 1.5.7 does.
:func:`reference_cam` runs pytorch_grad_cam itself (the reference for the tests, and the engine for the
perturbation/eigen methods in :data:`REFERENCE_CAM_METHODS`) inside a guard that restores the model.
:func:`cam` dispatches between the two.

pytorch_grad_cam (with OpenCV, scikit-learn and matplotlib behind it) is imported only when
:func:`reference_cam` runs.

The steps live in private modules, one job each: ``_checks`` (argument checks), ``_steps`` (capture, scores,
feature map, normalisation), ``_maps`` (one small function per method), ``_methods`` (the method tables),
``_engine`` (:func:`grad_cam` and :func:`cam`) and ``_reference`` (:func:`reference_cam`); this package
re-exports their public names.

:mod:`lightning_xai.functional` exports the function :func:`cam` under the same name as this package, so
the attribute ``lightning_xai.functional.cam`` (and ``import lightning_xai.functional.cam as m``) is that
function; take names from the package with ``from lightning_xai.functional.cam import ...`` (or
``importlib.import_module``).
"""

from lightning_xai.functional.cam._engine import cam, grad_cam
from lightning_xai.functional.cam._methods import CAM_METHODS, GRADIENT_CAM_METHODS, REFERENCE_CAM_METHODS
from lightning_xai.functional.cam._reference import reference_cam

__all__ = [
    "CAM_METHODS",
    "GRADIENT_CAM_METHODS",
    "REFERENCE_CAM_METHODS",
    "cam",
    "grad_cam",
    "reference_cam",
]
