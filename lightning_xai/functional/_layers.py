"""Target-layer resolution for CAM methods: names to modules, automatic choice, token reshapes.

Pure torch. ``resolve_layer`` turns the dotted name a user writes in YAML into the submodule (and lists the
names that exist when it is wrong); ``find_target_layer`` picks a sensible default layer, with the
``reshape_transform`` that turns its output into a ``(B, C, h, w)`` map: the last block of a known vision
transformer, otherwise the last convolutional feature map seen in one forward pass.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._guard import observer_guard
from lightning_xai.functional._reshape import swin_reshape_transform, vit_reshape_transform

__all__ = [
    "find_target_layer",
    "layer_label",
    "resolve_layer",
    "suggest_layers",
    "token_grid",
    "swin_reshape_transform",
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


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule of ``model`` called ``name``.

    Args:
        model: The model.
        name: A dotted name as listed by ``model.named_modules()`` (``"layer4.1"``), or the same with
            Python-style indices into ``Sequential``/``ModuleList`` containers (``"layer4[-1]"``).

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
        raise TypeError(expected("target_layer", "the name of a submodule (a string)", name))
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    found = _walk(model, name)
    if found is not None:
        return found
    names = [n for n in modules if n]
    closest = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    raise ValueError(
        expected("target_layer", f"the name of a submodule of {type(model).__name__}", name)
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
def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _known_transformer(model: nn.Module) -> tuple[str, Callable[[Tensor], Tensor]] | None:
    """The last block's first norm of the outermost known vision transformer inside ``model``, if any."""
    for prefix, module in model.named_modules():
        kind = type(module).__name__
        origin = type(module).__module__
        if origin.startswith("torchvision.") and kind == "VisionTransformer":
            last = list(module.encoder.layers.named_children())[-1][0]
            return _join(prefix, f"encoder.layers.{last}.ln_1"), functools.partial(
                vit_reshape_transform, num_prefix_tokens=1
            )
        if origin.startswith("torchvision.") and kind == "SwinTransformer":
            features = module.features.named_modules()
            blocks = [n for n, m in features if hasattr(m, "norm1") and hasattr(m, "attn")]
            if blocks:
                return _join(prefix, f"features.{blocks[-1]}.norm1"), swin_reshape_transform
        if origin.startswith("transformers.") and isinstance(getattr(module, "embeddings", None), nn.Module):
            # A Hugging Face backbone (ViTModel, DeiTModel, SwinModel, ...): the encoder's layout changed
            # between releases (`encoder.layer`, `layers`, `encoder.layers[i].blocks`), so take the last
            # block that has a `layernorm_before`, wherever it sits.
            blocks = [n for n, m in module.named_modules() if n and hasattr(m, "layernorm_before")]
            if not blocks:
                continue
            name = _join(prefix, f"{blocks[-1]}.layernorm_before")
            if "swin" in origin:
                return name, swin_reshape_transform
            embeddings = module.embeddings
            tokens = ("cls_token", "distillation_token")
            num_prefix = sum(int(getattr(embeddings, token, None) is not None) for token in tokens)
            return name, functools.partial(vit_reshape_transform, num_prefix_tokens=num_prefix)
    return None


def _stems(model: nn.Module) -> set[str]:
    """Patch-embedding layers (the stem of a transformer) and what they hold: never a CAM layer."""
    names = set()
    for name, module in model.named_modules():
        if "embed" in name.rpartition(".")[2].lower() or "embed" in type(module).__name__.lower():
            names.add(name)
            names.update(_join(name, n) for n, _ in module.named_modules() if n)
    return names


def _first_sample(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Slice the tensors that share the first input's batch size to one sample: the search needs one."""
    batch = inputs[0].shape[0] if isinstance(inputs[0], Tensor) and inputs[0].ndim > 0 else None
    return tuple(
        x[:1] if isinstance(x, Tensor) and x.ndim > 0 and batch is not None and x.shape[0] == batch else x
        for x in inputs
    )


def _is_feature_map(output: Any) -> bool:
    """A 4-D (image) or 5-D (clip) output with spatial extent: never a pooled ``(..., 1, 1[, 1])`` one."""
    if not isinstance(output, Tensor):
        return False
    return output.ndim in (4, 5) and output.shape[-1] * output.shape[-2] > 1


def _transformer_block(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The last block of the last stack of attention blocks inside ``model`` (found by structure, not by name):
    the last ``nn.ModuleList``/``nn.Sequential`` whose children each hold an attention module and a LayerNorm."""
    found = None
    for name, stack in model.named_modules():
        if not isinstance(stack, (nn.ModuleList, nn.Sequential)) or len(stack) == 0:
            continue
        blocks = list(stack.named_children())
        if all(_attention(block) and _first_norm(block) is not None for _, block in blocks):
            found = (_join(name, blocks[-1][0]), blocks[-1][1])
    return found


def _attention(block: nn.Module) -> bool:
    return any("attention" in type(m).__name__.lower() or n.rpartition(".")[2] in ("attn", "self_attn",
               "attention", "self_attention") for n, m in block.named_modules() if n)


def _first_norm(block: nn.Module) -> str | None:
    """The block's first LayerNorm in definition order: the norm that feeds its attention (pre-norm blocks)."""
    return next((n for n, m in block.named_modules() if n and isinstance(m, nn.LayerNorm)), None)


def _token_reshape(model: nn.Module, layer: nn.Module, inputs: tuple[Any, ...],
                   forward_fn: Callable[..., Any] | None) -> Callable[[Tensor], Tensor] | None:
    """The reshape of ``layer``'s tokens into the input image's patch grid: prefix tokens (class, distillation,
    registers) = tokens - grid cells, the grid's aspect that of the image; ``None`` when it is no token tensor."""
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda m, a, out: captured.append(out) if isinstance(out, Tensor) else None)
    with observer_guard(model):
        try:
            model.eval()
            with torch.inference_mode(False), torch.no_grad():
                sample = _first_sample(inputs)
                model(*sample) if forward_fn is None else forward_fn(model, *sample)
        finally:
            handle.remove()
    image = next((x for x in inputs if isinstance(x, Tensor) and x.ndim == 4), None)
    if not captured or captured[-1].ndim != 3 or image is None:
        return None
    grid = token_grid(captured[-1].shape[1], image.shape[-2], image.shape[-1])
    if grid is None:
        return None
    prefix, rows, cols = grid
    return functools.partial(vit_reshape_transform, num_prefix_tokens=prefix, grid=(rows, cols))


def token_grid(tokens: int, height: int, width: int, max_prefix: int = 8) -> tuple[int, int, int] | None:
    """``(prefix tokens, rows, cols)``: the patch grid of an image ``height x width`` among ``tokens`` tokens.

    The fewest prefix tokens (at most ``max_prefix``) that leave a grid with the image's aspect ratio.

    Example:
        >>> token_grid(1 + 4 + 16, 32, 32), token_grid(1 + 8, 16, 32)  # CLS + 4 registers; a 2 x 4 grid
        ((5, 4, 4), (1, 2, 4))
    """
    for prefix in range(0, max_prefix + 1):
        cells = tokens - prefix
        if cells <= 0:
            break
        for rows in range(1, cells + 1):
            if cells % rows == 0 and rows * width == (cells // rows) * height:
                return prefix, rows, cells // rows
    return None


def _last_feature_map(
    model: nn.Module, inputs: tuple[Any, ...], forward_fn: Callable[..., Any] | None
) -> str | None:
    """Run one forward and return the name of the module that produced the last convolutional feature map."""
    calls: dict[str, int] = {}
    seen: list[tuple[str, Tensor, int]] = []  # (name, output, output version when the module returned)
    stem = _stems(model)

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if _is_feature_map(output):
                seen.append((name, output, output._version))

        return hook

    handles = []
    with observer_guard(model):
        try:
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(make_hook(name)))
            model.eval()
            with torch.inference_mode(False), torch.no_grad():
                sample = _first_sample(inputs)
                if forward_fn is None:
                    model(*sample)
                else:
                    forward_fn(model, *sample)
        finally:
            for handle in handles:
                handle.remove()
    once = [(name, out, version) for name, out, version in seen if calls[name] == 1 and name not in stem]
    if not once:
        return None
    last = once[-1][1]
    # Modules returning the very same tensor (a block and its container, an in-place ReLU and its conv):
    # keep those that saw its final value (not later changed in place), then the deepest of them.
    ties = [(name, version) for name, out, version in once if out is last]
    final = max(version for _, version in ties)
    return max((name for name, version in ties if version == final), key=lambda n: n.count("."))


def find_target_layer(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    forward_fn: Callable[..., Any] | None = None,
) -> tuple[str, Callable[[Tensor], Tensor] | None]:
    """Pick a default CAM target layer of ``model`` and the ``reshape_transform`` its output needs.

    Rules, first match wins:

    * torchvision ``VisionTransformer`` -> ``encoder.layers.<last>.ln_1`` with :func:`vit_reshape_transform`
      (one class token);
    * Hugging Face ViT / DeiT (a backbone with ``embeddings`` and blocks with ``layernorm_before``) -> the
      last block's ``layernorm_before`` with :func:`vit_reshape_transform` (1 prefix token, 2 for DeiT);
    * torchvision ``SwinTransformer`` -> the last block's ``norm1`` with :func:`swin_reshape_transform`;
      Hugging Face Swin -> the last block's ``layernorm_before`` with :func:`swin_reshape_transform`;
    * otherwise one forward (no grad, eval mode, model restored afterwards) and the module called exactly once
      whose 4-D or 5-D output with spatial extent (never a pooled ``(..., 1, 1[, 1])`` output, never a
      patch-embedding stem) was produced last; among modules returning the very same tensor, the deepest one that
      saw its final value (ResNet-18 -> ``layer4.1``, R3D-18 -> ``layer4.1``);
    * a model without such a map but with a stack of attention blocks (DINOv2, CLIP's vision tower, BEiT, ...),
      found by structure: the last block's first LayerNorm (the one feeding its attention), with
      :func:`vit_reshape_transform` on the patch grid inferred from the tokens and the image (prefix tokens:
      class, distillation, registers).

    Known transformers are found anywhere inside ``model`` (e.g. a LightningModule holding the backbone) and
    their names are prefixed accordingly. The token reshapes assume a square patch grid.

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors (batch first), as the model takes them; only the first sample is
            run.
        forward_fn: ``forward_fn(model, *inputs)`` runs the model; default ``model(*inputs)``.

    Returns:
        ``(name, reshape_transform)``: the dotted module name and ``None`` for CNNs.

    Raises:
        ValueError: If the model has neither a convolutional feature map nor a known transformer block.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> find_target_layer(net, torch.zeros(1, 3, 8, 8))
        ('1', None)
    """
    known = _known_transformer(model)
    if known is not None:
        return known
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    name = _last_feature_map(model, inputs, forward_fn)
    block = _transformer_block(model) if name is None else None
    if block is not None:  # tokens only (DINOv2, CLIP's vision tower, BEiT...): the last block's first norm
        layer = _join(block[0], _first_norm(block[1]))  # type: ignore[arg-type]
        reshape = _token_reshape(model, model.get_submodule(layer), inputs, forward_fn)
        if reshape is not None:
            return layer, reshape
    if name is None:
        raise ValueError(
            expected(
                "target_layer",
                f"given explicitly: {type(model).__name__} has no convolutional feature map (a 4-D output "
                "with more than one pixel, or a 5-D output) nor a known transformer block",
                None,
            )
            + f" Pass `target_layer=` with the name of a layer, e.g. one of {_shorten(_candidates(model))}"
            f" or of {[n for n, _ in model.named_modules() if n][-5:]}."
        )
    return name, None
