"""The transformer side of the layer search: attention stacks found by structure, and their token grid.

Pure torch, on a :class:`~lightning_xai.functional._layers_trace.Trace`. A stack is a ``ModuleList``/``Sequential``
whose children each hold an attention module and a LayerNorm (the innermost such); its target is the last block's
norm feeding the attention (seen in the trace, else its first norm), as pytorch-grad-cam's tutorials pick
``blocks[-1].norm1``. Its tokens are put back on the input's grid from the patch embedding that made them: the last
convolution before the stack (ViT, DINOv2, CLIP, BEiT: a 2-D grid; VideoMAE, MViT: tubelets; Whisper: frames after
its strided Conv1d; AST: frequency x time patches of a time x frequency input), divided by the stages' downsampling
(Swin, MViT); the prefix tokens (class, distillation, registers) are the tokens left over. Without such a
convolution the grid is the one with the input's aspect ratio.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from lightning_xai.functional._layers_trace import Record, Trace, is_attention
from lightning_xai.functional._reshape import (
    swin_reshape_transform,
    token_reshape_transform,
    video_reshape_transform,
    vit_reshape_transform,
)

__all__: list[str] = []

_MAX_PREFIX = 8
_STRIDES = (1, 2, 4, 8, 16, 32)


@dataclass
class TokenLayer:
    """A transformer target: the norm's record, its reshape, the block's end and the stack it closes."""

    record: Record
    reshape: Callable[[Tensor], Tensor] | None
    block_end: int
    stack_start: int


def map_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input's axes a map covers: ``(H, W)`` of images, ``(T, H, W)`` of clips (either layout), both axes of a
    ``(B, A, B')`` spectrogram.

    Example:
        >>> map_axes((1, 3, 8, 8)), map_axes((1, 4, 3, 8, 8)), map_axes((1, 3, 4, 8, 8)), map_axes((1, 20, 16))
        ((2, 3), (1, 3, 4), (2, 3, 4), (1, 2))
    """
    if len(shape) == 5:
        return (2, 3, 4) if shape[1] in (1, 3) and shape[2] not in (1, 3) else (1, 3, 4)
    return tuple(range(max(len(shape) - 2, 1), len(shape)))


def _is_norm(module: nn.Module) -> bool:
    kind = type(module).__name__.lower()
    return isinstance(module, nn.LayerNorm) or "layernorm" in kind or "rmsnorm" in kind


def _holds_attention(block: nn.Module) -> bool:
    return any(is_attention(m) or n.rpartition(".")[2] in ("attn", "self_attn", "self_attention")
               for n, m in block.named_modules() if n)


def _stacks(model: nn.Module) -> list[tuple[str, list[tuple[str, nn.Module]]]]:
    """Innermost containers whose children each hold an attention module and a norm, in definition order."""
    found = []
    for name, stack in model.named_modules():
        if isinstance(stack, (nn.ModuleList, nn.Sequential)) and len(stack) > 0:
            blocks = list(stack.named_children())
            if all(_holds_attention(b) and any(_is_norm(m) for m in b.modules()) for _, b in blocks):
                found.append((name, [(f"{name}.{n}" if name else n, b) for n, b in blocks]))
    inner = [s for s in found if not any(o is not s and o[0].startswith(f"{s[0]}.") for o in found)]
    return [s for s in inner if s[0] or len(found) == 1]


def channels_last(record: Record) -> bool:
    out, module = record.output, record.module
    shape = getattr(module, "normalized_shape", None) or (getattr(module, "weight", None) is not None
                                                          and tuple(module.weight.shape))
    return out is not None and out.ndim in (4, 5) and bool(shape) and tuple(shape)[-1] == out.shape[-1]


def _channels_first(output: Tensor | None, normed: Tensor) -> bool:
    """Is a block's output a channels-first map (its channels those the norm normalises, at dim 1)?"""
    return output is not None and output.ndim in (4, 5) and output.shape[1] == normed.shape[-1] != output.shape[-1]


def token_layer(trace: Trace, model: nn.Module) -> tuple[TokenLayer | None, list[str]]:
    """The target of the last attention stack on the explained input's path, and every stack norm considered."""
    considered: list[str] = []
    chosen = None
    for stack_name, blocks in _stacks(model):
        ran = [(n, trace.records[n]) for n, _ in blocks if trace.records[n].calls]
        if not ran:
            continue
        block_name, block = ran[-1]
        start = min(r.start for _, r in ran)
        norms = [trace.records[f"{block_name}.{n}"] for n, m in block.module.named_modules() if n and _is_norm(m)]
        norms = [r for r in norms if r.calls and r.output is not None and r.depends and trace.on_input_path(r.output)]
        feeding = [r for r in norms if trace.feeds_attention(r.output)]  # type: ignore[arg-type]
        if norms and _channels_first(block.output, norms[0].output):  # type: ignore[arg-type]
            continue  # attention inside a convolutional stage (MaxViT): its output is a feature map
        considered += [r.name for r in (feeding or norms)[:1]]
        for record in feeding + norms:
            reshape = _reshape(trace, record, start)
            if reshape is not False:
                if chosen is None or block.end > chosen.block_end:
                    chosen = TokenLayer(record, reshape or None, block.end, start)
                break
    return chosen, considered


def _reshape(trace: Trace, record: Record, stack_start: int) -> Callable[[Tensor], Tensor] | None | bool:
    """The reshape that puts ``record``'s output on the input's grid; ``False`` when it is not on that grid."""
    out, x = record.output, trace.sample
    if out is None or x is None:
        return False
    axes = map_axes(tuple(x.shape))
    if channels_last(record):  # (B, H, W, C) or (B, T, H, W, C) on the input's grid (not windows of it)
        spatial, sizes = tuple(out.shape[1:-1]), [x.shape[a] for a in axes]
        on_grid = len(spatial) == len(sizes) and any(
            spatial[-2:] == tuple(rounding(n / stride) for n in sizes[-2:])
            for stride in _STRIDES for rounding in (math.ceil, math.floor))
        return swin_reshape_transform if out.shape[0] == 1 and on_grid and math.prod(spatial[-2:]) > 1 else False
    if out.ndim != 3:
        return False
    per_frame = x.ndim == 5 and out.shape[0] == x.shape[axes[0]] > 1
    if out.shape[0] != 1 and not per_frame:
        return False
    axes = axes[1:] if per_frame else axes
    sizes = [x.shape[a] for a in axes]
    found = _conv_grid(trace, out, sizes, stack_start)
    if found is None:
        found = _ratio_grid(out.shape[1], sizes)
    if found is None:
        return False
    prefix, grid, order = found
    if math.prod(grid[-2:] if len(grid) == 3 else grid) <= 1:
        return False  # a pooled grid: no spatial extent
    if order == tuple(range(len(grid))) and len(grid) == 2:
        return functools.partial(vit_reshape_transform, num_prefix_tokens=prefix, grid=grid)
    if order == tuple(range(len(grid))) and len(grid) == 3:
        return functools.partial(video_reshape_transform, grid=grid, num_prefix_tokens=prefix)
    return functools.partial(token_reshape_transform, grid=grid, num_prefix_tokens=prefix, axes=order)


def _conv_grid(trace: Trace, tokens: Tensor, sizes: list[int],
               stack_start: int) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
    """``(prefix, grid in token order, axes to the input's order)`` from the patch-embedding convolution."""
    convs = [r for r in trace.ran() if isinstance(r.module, nn.modules.conv._ConvNd) and r.end < stack_start
             and r.output is not None and r.output.shape[0] == tokens.shape[0] and r.input_shape is not None]
    if not convs or trace.upstream(tokens, [convs[-1].output]) != [True]:  # type: ignore[list-item]
        return None
    conv = convs[-1]
    base, seen = tuple(conv.output.shape[2:]), tuple(conv.input_shape[2:])  # type: ignore[union-attr, index]
    owner: list[int] = []  # the input map axis of each conv axis, matched by size
    for size in seen:
        match = next((j for j, s in enumerate(sizes) if s == size and j not in owner), None)
        if match is None:
            owner = list(range(len(sizes)))[-len(seen):] if len(seen) <= len(sizes) else []
            break
        owner.append(match)
    if len(owner) != len(base):
        return None
    free = [j for j in range(len(sizes)) if j not in owner]
    count = tokens.shape[1]
    for prefix in range(_MAX_PREFIX + 1):
        for stride in _STRIDES:
            for rounding in (math.ceil, math.floor):
                grid = tuple(g if (len(sizes) == 3 and owner[i] == 0) else max(rounding(g / stride), 1)
                             for i, g in enumerate(base))
                if math.prod(grid) == count - prefix:
                    token_order = (*(1 for _ in free), *grid)  # axes the tokens do not cover (Whisper's mel): 1
                    where = [*free, *owner]
                    return prefix, token_order, tuple(where.index(j) for j in range(len(sizes)))
    return None


def _ratio_grid(count: int, sizes: list[int]) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
    """Without a patch convolution: the fewest prefix tokens leaving a grid with the input's aspect ratio."""
    if len(sizes) == 3:
        found = token_grid_3d(count, *sizes)
        return None if found is None else (found[0], found[1:], (0, 1, 2))
    found2 = token_grid(count, sizes[-2], sizes[-1]) if len(sizes) == 2 else None
    return None if found2 is None else (found2[0], found2[1:], (0, 1))


def token_grid_3d(tokens: int, frames: int, height: int, width: int,
                  max_prefix: int = _MAX_PREFIX) -> tuple[int, int, int, int] | None:
    """``(prefix tokens, t, rows, cols)`` of a clip's tokens: ``t`` = frames / tubelet size, the grid with the
    image's aspect ratio; the fewest prefix tokens, then the longest ``t``.

    Example:
        >>> token_grid_3d(2 * 4 * 4, 4, 32, 32), token_grid_3d(1 + 4 * 2 * 2, 4, 16, 16)
        ((0, 2, 4, 4), (1, 4, 2, 2))
    """
    for prefix in range(max_prefix + 1):
        for tubelet in range(1, frames + 1):
            cells, t = tokens - prefix, frames // tubelet
            if frames % tubelet or cells <= 0 or cells % t:
                continue
            grid = token_grid(cells // t, height, width, max_prefix=0)
            if grid is not None:
                return prefix, t, grid[1], grid[2]
    return None


def token_grid(tokens: int, height: int, width: int, max_prefix: int = _MAX_PREFIX) -> tuple[int, int, int] | None:
    """``(prefix tokens, rows, cols)``: the patch grid of an image ``height x width`` among ``tokens`` tokens.

    The fewest prefix tokens (at most ``max_prefix``) that leave a grid with the image's aspect ratio.

    Example:
        >>> token_grid(1 + 4 + 16, 32, 32), token_grid(1 + 8, 16, 32)  # CLS + 4 registers; a 2 x 4 grid
        ((5, 4, 4), (1, 2, 4))
    """
    for prefix in range(max_prefix + 1):
        cells = tokens - prefix
        if cells <= 0:
            break
        for rows in range(1, cells + 1):
            if cells % rows == 0 and rows * width == (cells // rows) * height:
                return prefix, rows, cells // rows
    return None
