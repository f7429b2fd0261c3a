"""pytorch_grad_cam as an engine: the reference for the pure-torch family and the engine for every other method.

:func:`reference_cam` runs the pytorch_grad_cam class of a method inside a guard that restores the model (it
calls ``model.eval()`` and ``zero_grad()``). pytorch_grad_cam (with OpenCV, scikit-learn and matplotlib behind it)
is imported only when it runs.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, expected
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional._layers import layer_label
from lightning_xai.functional._targets import check_class_bounds
from lightning_xai.functional.cam._checks import (
    _check_inputs,
    _check_layer,
    _check_target,
    _no_inference_tensors,
    _Target,
)
from lightning_xai.functional.cam._methods import (
    _GRADIENT_REFERENCE_CLASSES,
    _NO_RESHAPE_METHODS,
    _NOISY_METHODS,
    _PER_SAMPLE_METHODS,
    CAM_METHODS,
    REFERENCE_CAM_METHODS,
)
from lightning_xai.functional.cam._steps import _as_feature_map, _layer_error

__all__ = ["reference_cam"]
class _OneInputModel(nn.Module):
    """Present ``forward_fn(model, *inputs)`` as ``module(x)`` with the other inputs held fixed.

    Fixed inputs of batch 1 are expanded to the batch of ``x`` (per-sample runs of perturbation methods).
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: tuple[Any, ...],
        input_index: int,
        forward_fn: Callable[..., Any] | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.fixed = inputs
        self.input_index = input_index % len(inputs)
        self.forward_fn = forward_fn
        self.output_ndim: int | None = None

    @staticmethod
    def _expand(value: Any, batch: int) -> Any:
        if isinstance(value, Tensor) and value.ndim and value.shape[0] == 1:
            return value.expand(batch, *value.shape[1:])
        return value

    def forward(self, x: Tensor) -> Tensor:
        args = [x if i == self.input_index else self._expand(a, x.shape[0]) for i, a in enumerate(self.fixed)]
        output = self.model(*args) if self.forward_fn is None else self.forward_fn(self.model, *args)
        self.output_ndim = output.ndim if isinstance(output, Tensor) else None
        return output


class _CallableTarget:
    """pytorch_grad_cam target calling a batch-level score function (it passes one sample or a batch)."""

    def __init__(self, fn: Callable[[Any], Tensor], wrapper: _OneInputModel) -> None:
        self.fn = fn
        self.wrapper = wrapper

    def __call__(self, output: Tensor) -> Tensor:
        if output.ndim == self.wrapper.output_ndim:
            return self.fn(output)
        return self.fn(output.unsqueeze(0))[0]


def _import_grad_cam() -> Any:
    try:
        import pytorch_grad_cam
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ModuleNotFoundError(
            "`reference_cam` needs pytorch_grad_cam: install it with `pip install 'grad-cam>=1.5.4,<1.6'`."
        ) from err
    return pytorch_grad_cam


def _run_reference(
    library: Any,
    method: str,
    wrapper: _OneInputModel,
    image: Tensor,
    target: Tensor | Callable[[Any], Tensor],
    target_layer: nn.Module,
    reshape_transform: Callable[[Tensor], Tensor] | None,
) -> Tensor:
    name = _GRADIENT_REFERENCE_CLASSES.get(method) or REFERENCE_CAM_METHODS[method]
    cls = getattr(library, name)
    kwargs: dict[str, Any] = {}
    layers = [target_layer]
    if method == "ablationcam":  # a fresh ablation layer: the default instance is shared between calls
        vit = reshape_transform is not None
        kwargs["ablation_layer"] = library.AblationLayerVit() if vit else library.AblationLayer()
    if method == "fullgrad":
        layers = []  # it uses every bias layer and prints a warning when given target layers
    if isinstance(target, Tensor):
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets: list[Any] = [ClassifierOutputTarget(int(t)) for t in target.tolist()]
    else:
        targets = [_CallableTarget(target, wrapper)] * image.shape[0]
    quiet: Any = contextlib.nullcontext()
    if method in _NOISY_METHODS:
        quiet = contextlib.redirect_stderr(io.StringIO())
    result = None
    try:
        with cls(wrapper, layers, reshape_transform=reshape_transform, **kwargs) as engine, quiet:
            try:
                result = engine(image, targets)
            except IndexError as err:  # its __exit__ would print and swallow an IndexError
                raise RuntimeError(f"pytorch_grad_cam {name} failed: {err!r}") from err
    finally:
        if "ablation_layer" in kwargs:  # put the target layer back if the ablation stopped half-way
            from pytorch_grad_cam.utils.find_layers import replace_layer_recursive

            replace_layer_recursive(wrapper, kwargs["ablation_layer"], target_layer)
    return torch.from_numpy(result)


def _preflight(
    wrapper: _OneInputModel,
    image: Tensor,
    target: Tensor | Callable[[Any], Tensor],
    target_layer: nn.Module,
    reshape_transform: Callable[[Tensor], Tensor] | None,
    check_layer: bool,
) -> None:
    """One no-grad forward to check, before pytorch_grad_cam fails obscurely, that the target layer gives a
    feature map and class indices fit the output; both errors name the layer or index (a layer that does not
    run here, e.g. on a fused fast path, is left to pytorch_grad_cam)."""
    captured: list[Any] = []
    handle = target_layer.register_forward_hook(lambda m, a, out: captured.append(out) if not captured else None)
    try:
        with torch.no_grad():
            output = wrapper(image)
    finally:
        handle.remove()
    label = layer_label(wrapper.model, target_layer)
    if check_layer and captured:
        if not isinstance(captured[0], Tensor):
            got = f"its output is a {type(captured[0]).__name__}"
            raise TypeError(_layer_error(label, "a layer whose output is a tensor", got))
        layer_output = captured[0] if reshape_transform is None else reshape_transform(captured[0])
        _as_feature_map(layer_output.float(), image, label, reshape_transform is not None)
    if isinstance(target, Tensor) and isinstance(output, Tensor) and output.ndim == 2:
        check_class_bounds(target, output.shape[1])


def reference_cam(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: _Target,
    target_layer: nn.Module,
    *,
    method: str,
    forward_fn: Callable[..., Any] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    input_index: int = 0,
) -> Tensor:
    """Class activation maps computed by pytorch_grad_cam, with the model left as it was found.

    Any method of :data:`CAM_METHODS` (the gradient family included: this is the tests' reference). The model
    is wrapped so that pytorch_grad_cam sees ``module(x)`` with ``x = inputs[input_index]`` and the other
    inputs fixed; the CAM object is used as a context manager so its hooks are released, and everything runs
    inside :func:`explanation_mode` because pytorch_grad_cam calls ``model.eval()``, ``zero_grad()`` and
    ``.backward()``. Perturbation methods (``scorecam``, ``ablationcam``, ``sess``) run one sample at a time
    when there are several inputs. Progress bars of ``scorecam``/``ablationcam`` are silenced.

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors, batch first.
        target: Class indices (a ``(B,)`` integer tensor, or one ``int``), or a callable mapping the model
            output (a batch) to ``(B,)`` scores.
        target_layer: The module whose output is explained (ignored by ``fullgrad``).
        method: One of :data:`CAM_METHODS`.
        forward_fn: ``forward_fn(model, *inputs)`` returns the output the target scores; default
            ``model(*inputs)``.
        reshape_transform: Maps the layer's output to ``(B, C, h, w)``.
        input_index: Which of ``inputs`` is the image pytorch_grad_cam perturbs and sizes the maps like.

    Returns:
        ``(B, H, W)`` float32 maps (``(B, T, H, W)`` for 3-D conv video models) on the input's device.

    Raises:
        ValueError: For an unknown ``method``, bad shapes, or a ``reshape_transform`` with ``fullgrad`` or
            ``shapleycam`` (CNN feature maps only in pytorch_grad_cam 1.5.7).
        TypeError: For arguments of the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 2))
        >>> reference_cam(net, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), net[1], method="eigencam").shape
        torch.Size([2, 8, 8])
    """
    method = check_choice("method", method, CAM_METHODS)
    target_layer = _check_layer(target_layer)
    inputs, image = _check_inputs(inputs, input_index)
    target = _check_target(target, image.shape[0])
    if reshape_transform is not None and method in _NO_RESHAPE_METHODS:
        allowed = f"None for method {method!r} (it supports CNN feature maps only)"
        raise ValueError(expected("reshape_transform", allowed, reshape_transform))
    library = _import_grad_cam()
    with explanation_mode(model):
        inputs = _no_inference_tensors(inputs)
        image = inputs[input_index]
        wrapper = _OneInputModel(model, inputs, input_index, forward_fn)
        _preflight(wrapper, image, target, target_layer, reshape_transform, method != "fullgrad")
        if len(inputs) > 1 and method in _PER_SAMPLE_METHODS:
            maps = []
            for i in range(image.shape[0]):
                one = tuple(x[i : i + 1] if isinstance(x, Tensor) and x.ndim else x for x in inputs)
                wrapper = _OneInputModel(model, one, input_index, forward_fn)
                one_target = target[i : i + 1] if isinstance(target, Tensor) else target
                args = (library, method, wrapper, one[input_index], one_target, target_layer)
                maps.append(_run_reference(*args, reshape_transform))
            result = torch.cat(maps)
        else:
            result = _run_reference(library, method, wrapper, image, target, target_layer, reshape_transform)
    return result.float().to(image.device)
