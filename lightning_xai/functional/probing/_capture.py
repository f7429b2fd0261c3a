"""Activations of named layers during one forward, pooled as they are produced; the hooks never outlive the call.

Pure torch. One forward hook per layer pools that layer's output (:func:`pool_activations`) right away, so only
``(B, D)`` rows are kept, never whole feature maps; the hooks are removed in ``finally``, also when the forward
fails. The model is not put in eval mode and grad is not switched off here: run it inside
:func:`~lightning_xai.functional.explanation_mode` and ``torch.no_grad()`` (the callback does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch  # noqa: F401  (the docstring example uses it)
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._layers import layer_label, resolve_layer
from lightning_xai.functional.probing._pool import Pooling, feature_axis, pool_activations

__all__ = ["capture_activations"]


def _tensor_of(output: Any) -> Tensor | None:
    """The output itself when it is a tensor, else the first tensor of a tuple/list; ``None`` otherwise."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and not isinstance(output, Mapping):
        return next((v for v in output if isinstance(v, Tensor)), None)
    return None


def _kind(output: Any) -> str:
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} without a tensor"
    return "None" if output is None else f"a {type(output).__name__}"


def capture_activations(model: nn.Module, layers: Sequence[str], run: Callable[[], Any], pooling: Pooling = "mean",
                        max_features: int = 4096, mask: Tensor | None = None) -> dict[str, Tensor]:
    """Run ``run()`` once and return each named layer's pooled output, ``{name: (B, D)}`` on the model's device.

    Args:
        model: The model holding the layers.
        layers: Dotted names of submodules (as ``model.named_modules()`` lists them).
        run: Runs the forward pass (e.g. ``lambda: model(x)``); its return value is ignored.
        pooling: How each output is pooled (see :func:`pool_activations`); the feature axis is read off the layer.
        max_features: The cap on the width of ``pooling="flatten"``.
        mask: ``(B, T)`` attention mask: token outputs ``(B, T, D)`` are mean/max pooled over the kept tokens.

    Returns:
        ``{name: (B, D) float32}`` in the order of ``layers``; a layer called several times keeps its last output.

    Raises:
        ValueError: If a name is not a submodule (the message lists candidates), a layer returns something other
            than a tensor or a tuple holding one, or a layer did not run; each message names ``layers`` and the
            module.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        >>> x = torch.randn(5, 3, 6, 6)
        >>> got = capture_activations(net, ["0", "3"], lambda: net(x))
        >>> {k: tuple(v.shape) for k, v in got.items()}, [len(m._forward_hooks) for m in net]
        ({'0': (5, 4), '3': (5, 2)}, [0, 0, 0, 0])
    """
    modules = {name: resolve_layer(model, name, argument="layers") for name in layers}
    found: dict[str, Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            tensor = _tensor_of(output)
            if tensor is None:
                raise ValueError(expected("layers", "names of modules that return a tensor (or a tuple holding one)",
                                          name) + f" The module {layer_label(model, module)} returned {_kind(output)}."
                                 " Name a submodule that returns the activations (e.g. one of its children).")
            if tensor.dim() < 2:
                raise ValueError(expected("layers", "names of modules whose output is batch first (B, ...)", name)
                                 + f" The module {layer_label(model, module)} returned shape {tuple(tensor.shape)}.")
            axis = feature_axis(module, tuple(tensor.shape))
            try:
                found[name] = pool_activations(tensor, pooling, max_features, axis=axis, mask=mask)
            except ValueError as err:
                raise ValueError(f"{err} (layer {layer_label(model, module)})") from err

        return keep

    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(hook(name)))
        run()
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in modules if name not in found]
    if missing:
        raise ValueError(expected("layers", "names of modules that run in the forward pass", missing[0])
                         + f" The module {layer_label(model, modules[missing[0]])} was not called.")
    return {name: found[name] for name in modules}
