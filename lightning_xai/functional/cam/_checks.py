"""Argument checks of the CAM engines: inputs, target, target layer (shared with ``reference_cam``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._targets import check_class_target

__all__: list[str] = []

_Target = Tensor | int | Callable[[Any], Tensor]


# ------------------------------------------------------------------------------------- argument checks
def _check_inputs(inputs: Any, input_index: Any) -> tuple[tuple[Any, ...], Tensor]:
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if not inputs or not any(isinstance(x, Tensor) for x in inputs):
        raise TypeError(expected("inputs", "a tensor or a tuple of tensors (batch first)", inputs))
    valid_index = isinstance(input_index, int) and not isinstance(input_index, bool)
    if not valid_index or not -len(inputs) <= input_index < len(inputs):
        raise ValueError(expected("input_index", f"an index into the {len(inputs)} inputs", input_index))
    image = inputs[input_index]
    if not isinstance(image, Tensor) or image.ndim not in (3, 4, 5) or not image.is_floating_point():
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(
            expected(
                f"inputs[{input_index}]",
                "an image batch (B, C, H, W), a video batch (B, C, T, H, W) / (B, T, C, H, W) or a spectrogram "
                "batch (B, frames, mel) / (B, mel, frames), floating point",
                got,
            )
        )
    return inputs, image


def _check_target(target: Any, batch: int) -> Tensor | Callable[[Any], Tensor]:
    return cast("Tensor | Callable[[Any], Tensor]", check_class_target(target, batch))


def _check_layer(target_layer: Any) -> nn.Module:
    if not isinstance(target_layer, nn.Module):
        allowed = "an nn.Module (resolve names with `resolve_layer`)"
        raise TypeError(expected("target_layer", allowed, type(target_layer).__name__))
    return target_layer


def _no_inference_tensors(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Clone tensors created under ``torch.inference_mode``: autograd cannot record them."""
    return tuple(x.clone() if isinstance(x, Tensor) and x.is_inference() else x for x in inputs)
