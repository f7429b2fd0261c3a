"""The choice behind ``find_target_layer``: a convolutional feature map or a transformer's tokens, by structure.

Pure torch, on one :func:`~lightning_xai.functional._layers_trace.trace`. Feature maps count only with spatial (and
temporal) extent (never a pooled ``(..., 1, 1[, 1])`` output), only when the model's output depends on them, never
channels-last norms. The transformer target (see ``_layers_tokens``) wins unless a convolution ran after its block
(a hybrid whose last stage is convolutional, MobileViT); a feature map that ran before an attention stack is the
stack's stem and never chosen. When two plausible layers lie on parallel branches (two towers both feeding the
output), the search warns and names both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lightning_xai.functional._layers_tokens import channels_last, map_axes, token_layer
from lightning_xai.functional._layers_trace import Record, Trace, trace

__all__: list[str] = []


@dataclass
class Choice:
    """The search's answer: a layer name and reshape, or ``None`` with why and the names it considered."""

    name: str | None
    reshape: Callable[[Tensor], Tensor] | None = None
    why: str = ""
    considered: list[str] = field(default_factory=list)


def _frames(found: Trace) -> int | None:
    x = found.sample
    return None if x is None or x.ndim != 5 else int(x.shape[map_axes(tuple(x.shape))[0]])


def _feature_maps(found: Trace) -> list[Record]:
    """Modules called once whose output is a channels-first map with spatial extent the output depends on."""
    frames = _frames(found)
    maps = []
    for r in found.ran():
        out = r.output
        if r.calls != 1 or out is None or out.ndim not in (4, 5) or not r.depends or not out.is_floating_point():
            continue
        if out.shape[0] not in (1, frames) or out.shape[-1] * out.shape[-2] <= 1 or channels_last(r):
            continue
        maps.append(r)
    return maps


def _last(maps: list[Record]) -> Record:
    """The last map; among modules returning that very tensor, the deepest that saw its final value."""
    last = maps[-1].output
    ties = [r for r in maps if r.output is last]
    final = max(r.version for r in ties)
    return max((r for r in ties if r.version == final), key=lambda r: r.name.count("."))


def search(model: nn.Module, inputs: tuple[Any, ...], forward_fn: Callable[..., Any] | None,
           input_index: int = 0) -> Choice:
    """Trace once and choose; warn when two plausible layers lie on parallel branches."""
    found = trace(model, inputs, forward_fn, input_index)
    token, considered = token_layer(found, model)
    maps = _feature_maps(found)
    conv = _last(maps) if maps else None
    convs_after = token is not None and any(
        isinstance(r.module, nn.modules.conv._ConvNd) and r.end > token.block_end for r in found.ran())
    if token is not None and not (conv is not None and convs_after and conv.end > token.block_end):
        chosen, reshape = token.record, token.reshape
    elif conv is not None and not (considered and token is None and _before_stacks(found, conv, considered)):
        chosen, reshape = conv, None
    elif considered:
        why = ("its attention blocks' tokens could not be put on the input's grid (no patch embedding whose grid, "
               "plus at most 8 prefix tokens, makes their count)")
        return Choice(None, why=why, considered=considered)
    else:
        why = ("no module's output is a feature map with spatial extent (a 4-D or 5-D output larger than 1 x 1 that "
               "the output depends on) nor a stack of attention blocks over the input's patches")
        return Choice(None, why=why)
    _warn_parallel(found, chosen, [r for r in maps if r.end < chosen.end])
    return Choice(chosen.name, reshape)


def _before_stacks(found: Trace, conv: Record, norms: list[str]) -> bool:
    """Did the feature map run before the attention stacks (their stem, a patch embedding)?"""
    return all(conv.end < found.records[n].start for n in norms if found.records[n].calls)


def _warn_parallel(found: Trace, chosen: Record, earlier: list[Record]) -> None:
    others = [r for r in earlier if r.output is not chosen.output]
    if not others or chosen.output is None:
        return
    upstream = found.upstream(chosen.output, [r.output for r in others])  # type: ignore[misc]
    parallel = [r.name for r, up in zip(others, upstream) if not up]
    if parallel:
        warnings.warn(
            f"lightning_xai: the automatic Grad-CAM layer is not sure: {chosen.name!r} (chosen, it ran last) and "
            f"{parallel[-1]!r} lie on parallel branches that both feed the output. Set `target_layer=` to the one "
            f"to explain, e.g. one of {[chosen.name, parallel[-1]]}.", UserWarning, stacklevel=3)
