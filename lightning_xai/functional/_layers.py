"""Target-layer resolution for CAM methods: names to modules, automatic choice, token reshapes.

Pure torch. ``resolve_layer`` turns the dotted name a user writes in YAML into the submodule (and lists the
names that exist when it is wrong); ``find_target_layer`` picks a sensible default layer by structure, with the
``reshape_transform`` that turns its output into a channels-first map (the steps live in ``_layers_trace``,
``_layers_tokens`` and ``_layers_search``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._layers_tokens import token_grid, token_grid_3d
from lightning_xai.functional._reshape import (
    swin_reshape_transform,
    token_reshape_transform,
    video_reshape_transform,
    vit_reshape_transform,
)

__all__ = [
    "find_target_layer",
    "layer_label",
    "resolve_layer",
    "suggest_layers",
    "swin_reshape_transform",
    "token_grid",
    "token_grid_3d",
    "token_reshape_transform",
    "video_reshape_transform",
    "vit_reshape_transform",
]

_MAX_LISTED = 12
_TOKEN = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")
_PATH = re.compile(r"(?:[^.\[\]]+|\[-?\d+\])(?:\.[^.\[\]]+|\[-?\d+\])*")


def _candidates(model: nn.Module) -> list[str]:
    """Names worth suggesting as CAM layers: convolutions and the blocks of sequential stages."""
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        parent = name.rpartition(".")[0]
        is_block = (
            isinstance(model.get_submodule(parent) if parent else model, (nn.Sequential, nn.ModuleList))
            and len(module._modules) > 0
        )
        if isinstance(module, nn.modules.conv._ConvNd) or is_block:
            names.append(name)
    return names


def _shorten(names: Sequence[str]) -> list[str]:
    """Keep the last entries (the deep layers CAMs are usually taken from) and say how many were dropped."""
    if len(names) <= _MAX_LISTED:
        return list(names)
    return [f"... {len(names) - _MAX_LISTED} more", *names[-_MAX_LISTED:]]


def _walk(model: nn.Module, name: str) -> nn.Module | None:
    """Follow ``a.b[-1].c`` through attributes and ``Sequential``/``ModuleList`` indices; ``None`` if lost."""
    if _PATH.fullmatch(name) is None:
        return None
    module: Any = model
    for match in _TOKEN.finditer(name):
        key, index = match.group(1), match.group(2)
        if key is not None:
            module = module._modules.get(key) if isinstance(module, nn.Module) else None
        elif isinstance(module, (nn.Sequential, nn.ModuleList)) and -len(module) <= int(index) < len(module):
            module = module[int(index)]
        else:
            return None
        if module is None:
            return None
    return module if isinstance(module, nn.Module) else None


def resolve_layer(model: nn.Module, name: str, argument: str = "target_layer") -> nn.Module:
    """Return the submodule of ``model`` called ``name``.

    Args:
        model: The model.
        name: A dotted name as listed by ``model.named_modules()`` (``"layer4.1"``), or the same with
            Python-style indices into ``Sequential``/``ModuleList`` containers (``"layer4[-1]"``).
        argument: The user argument ``name`` came in, named in errors (``layers`` for probes).

    Returns:
        The submodule.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If no submodule has that name; the message lists the closest names and candidate layers.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> resolve_layer(net, "0")
        Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))
        >>> resolve_layer(net, "[-1]")
        ReLU()
    """
    if not isinstance(name, str):
        raise TypeError(expected(argument, "the name of a submodule (a string)", name))
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    found = _walk(model, name)
    if found is not None:
        return found
    names = [n for n in modules if n]
    closest = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    raise ValueError(
        expected(argument, f"the name of a submodule of {type(model).__name__}", name)
        + f" Closest names: {closest}. Candidates (conv layers and blocks): {_shorten(_candidates(model))}."
    )


def layer_label(model: nn.Module, layer: nn.Module) -> str:
    """How error messages name ``layer``: its dotted name in ``model`` and its type.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
        >>> layer_label(net, net[2]), layer_label(net, nn.ReLU())
        ("'2', a Linear", 'a ReLU that is not a submodule of the Sequential')
    """
    kind = type(layer).__name__
    name = next((n for n, m in model.named_modules() if m is layer), None)
    if name is None:
        return f"a {kind} that is not a submodule of the {type(model).__name__}"
    return f"{name!r}, a {kind}" if name else f"the whole {kind}"


def suggest_layers(model: nn.Module) -> list[str]:
    """Names worth trying as ``target_layer``: convolutions and blocks of sequential stages, deepest last.

    Example:
        >>> suggest_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
        ['0']
    """
    return _shorten(_candidates(model))


# ------------------------------------------------------------------------------------- find_target_layer
def find_target_layer(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    forward_fn: Callable[..., Any] | None = None,
    input_index: int = 0,
) -> tuple[str, Callable[[Tensor], Tensor] | None]:
    """Pick a default CAM target layer of ``model`` and the ``reshape_transform`` its output needs, by structure.

    One forward on the first sample of every input (cut alike; eval mode, model restored afterwards) records what
    each module returned and what the output depends on. Then:

    * a stack of attention blocks over the input's patches (ViT, DeiT, BEiT, DINOv2 with or without registers,
      CLIP's vision tower, Swin, MViT, Swin3D, VideoMAE, TimeSformer, AST, Whisper's encoder): the last block's
      norm feeding its attention, with the reshape that puts its tokens back on the input's grid (prefix tokens
      dropped; the grid read off the patch embedding, divided by the stages' downsampling);
    * otherwise, or when a convolution runs after that block (MobileViT), the module called exactly once whose
      channels-first 4-D or 5-D output with spatial extent was produced last: never a pooled
      ``(..., 1, 1[, 1])`` output, never the stem of an attention stack, never a layer the output does not depend
      on; among modules returning the very same tensor, the deepest one that saw its final value (ResNet-18 ->
      ``layer4.1``, R3D-18 -> ``layer4.1.relu``).

    Names are prefixed by where the backbone sits in ``model`` (e.g. a LightningModule holding it).

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors (batch first), as the model takes them; only the first sample of each
            is run.
        forward_fn: ``forward_fn(model, *inputs)`` runs the model; default ``model(*inputs)``.
        input_index: Which of ``inputs`` is explained (its grid is the one the tokens are put back on).

    Returns:
        ``(name, reshape_transform)``: the dotted module name and ``None`` for channels-first feature maps.

    Raises:
        ValueError: If nothing fits; the message names ``target_layer=`` with candidate names.

    Warns:
        UserWarning: When two plausible layers lie on parallel branches that both feed the output.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> find_target_layer(net, torch.zeros(1, 3, 8, 8))
        ('1', None)
    """
    from lightning_xai.functional._layers_search import search

    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    choice = search(model, inputs, forward_fn, input_index)
    if choice.name is None:
        names = choice.considered or _shorten(_candidates(model))
        raise ValueError(
            expected("target_layer", f"given explicitly: in {type(model).__name__}, {choice.why}", None)
            + f" Pass `target_layer=` with the name of a layer (and `reshape_transform=` for token outputs), e.g. "
            f"one of {names} or of {[n for n, _ in model.named_modules() if n][-5:]}."
        )
    return choice.name, choice.reshape
