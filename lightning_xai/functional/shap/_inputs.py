"""The input contract of the SHAP engines: which inputs are explained, baselines, targets, batched forwards.

Every floating input is explained; an integer input that feeds the token embedding layer is explained at that
layer's output (see :mod:`._tokens`); every other input (attention masks, ids the model embeds elsewhere)
is passed through unchanged, row by row. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._outputs import logits_of, model_device
from lightning_xai.functional._targets import check_class_target
from lightning_xai.functional.shap._tokens import EmbeddingSwap, _no_embedding_error, embed_tokens

__all__: list[str] = []

Target = Tensor | int | Callable[[Any], Tensor]

FLOAT, TOKEN, ROWS, FIXED = "float", "token", "rows", "fixed"


@dataclass
class Prepared:
    """Inputs ready for batched evaluation of interpolated points."""

    model: nn.Module
    forward_fn: Callable[..., Any] | None
    inputs: tuple[Tensor, ...]  # on the model's device, no inference tensors
    roles: tuple[str, ...]  # FLOAT / TOKEN (explained), ROWS (passed through row by row) / FIXED (as is)
    x: list[Tensor]  # explained inputs in input order; the token input as embeddings (B, L, D)
    bg: list[Tensor]  # their baselines (N, ...)
    target: Tensor | Callable[[Any], Tensor]
    swap: EmbeddingSwap | None
    batch: int
    out_device: torch.device

    @property
    def n_background(self) -> int:
        return self.bg[0].shape[0]


def as_tuple(name: str, value: Any) -> tuple[Any, ...]:
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not value:
        raise TypeError(expected(name, "a tensor or a non-empty tuple of tensors (batch first)", value))
    return value


def check_inputs(inputs: Any) -> tuple[Tensor, ...]:
    inputs = as_tuple("inputs", inputs)
    if not all(isinstance(x, Tensor) for x in inputs):
        got = [type(x).__name__ for x in inputs]
        raise TypeError(expected("inputs", "a tensor or a tuple of tensors (batch first)", got))
    first = next((x for x in inputs if x.ndim > 0), None)
    if first is None or first.shape[0] == 0:
        got = [tuple(x.shape) for x in inputs]
        raise ValueError(expected("inputs", "tensors with a batch dimension of at least 1", got))
    return inputs


def check_target(target: Any, batch: int) -> Tensor | Callable[[Any], Tensor]:
    return cast("Tensor | Callable[[Any], Tensor]", check_class_target(target, batch))


def score_rows(output: Any, target: Tensor | Callable[[Any], Tensor], probe_idx: Tensor) -> Tensor:
    """(rows,) target scores of a batched output whose row r belongs to probe ``probe_idx[r]``."""
    rows = probe_idx.shape[0]
    if isinstance(target, Tensor):
        logits = logits_of(output)
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(output).__name__
            allowed = "a function returning (batch, classes) logits for class-index targets"
            raise TypeError(expected("forward_fn", allowed, got))
        index = target.to(logits.device)[probe_idx.to(logits.device)]
        return logits.gather(1, index[:, None]).squeeze(1)
    scores = target(output)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (rows,):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(expected("target", f"a callable returning one score per row, shape ({rows},)", got))
    return scores


def forward_rows(prep: Prepared, probe_idx: Tensor, points: Sequence[Tensor] | None) -> Any:
    """Run the model on rows ``probe_idx`` of the inputs, with the explained inputs replaced by ``points``.

    ``points=None`` runs the probes' own inputs (token ids go through the embedding layer untouched).
    """
    args: list[Any] = []
    k = 0
    for role, value in zip(prep.roles, prep.inputs):
        if role == FIXED:
            args.append(value)
            continue
        if role in (FLOAT, TOKEN) and points is not None:
            if role == TOKEN and prep.swap is not None:
                args.append(value[probe_idx])
                prep.swap.substitute(points[k])
            else:
                args.append(points[k])
            k += 1
            continue
        args.append(value[probe_idx])
    try:
        out = prep.model(*args) if prep.forward_fn is None else prep.forward_fn(prep.model, *args)
    finally:
        pending = prep.swap is not None and prep.swap.discard_pending()
    if pending and prep.swap is not None:
        raise ValueError(expected("embedding_layer", "a layer that runs in the forward pass", prep.swap.name))
    return out


def _token_input(
    prep_inputs: tuple[Tensor, ...],
    batch: int,
    swap: EmbeddingSwap,
    forward: Callable[[tuple[Tensor, ...]], Any],
) -> int | None:
    """Index of the integer input the embedding layer receives (run one forward of the first probe)."""
    one = tuple(x[:1] if x.ndim and x.shape[0] == batch else x for x in prep_inputs)
    swap.last_input = None
    with torch.no_grad():
        forward(one)
    seen = swap.last_input
    if not isinstance(seen, Tensor):
        return None
    candidates = [i for i, x in enumerate(one) if not x.dtype.is_floating_point and x.ndim >= 2]
    for i in candidates:
        if one[i] is seen:
            return i
    for i in candidates:
        if one[i].shape == seen.shape and torch.equal(one[i], seen.to(one[i].device)):
            return i
    return None


def _role(x: Tensor, batch: int, is_token: bool) -> str:
    batched = x.ndim > 0 and x.shape[0] == batch
    if is_token:
        return TOKEN
    if batched:
        return FLOAT if x.dtype.is_floating_point else ROWS
    return FIXED


def prepare(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    baselines: Any,
    target: Any,
    forward_fn: Callable[..., Any] | None,
    swap: EmbeddingSwap | None,
    explicit_layer: bool,
) -> Prepared:
    """Check and place everything; find the token input; embed tokens and their baselines."""
    batch = next(x.shape[0] for x in inputs if x.ndim > 0)
    out_device = next(x.device for x in inputs if x.ndim > 0)
    device = model_device(model, out_device)
    inputs = tuple((x.clone() if x.is_inference() else x).to(device) for x in inputs)
    target = check_target(target, batch)
    baselines = as_tuple("baselines", baselines)
    if len(baselines) != len(inputs):
        raise ValueError(expected("baselines", f"one entry per input ({len(inputs)})", len(baselines)))

    def run(args: tuple[Tensor, ...]) -> Any:
        return model(*args) if forward_fn is None else forward_fn(model, *args)

    token = _token_input(inputs, batch, swap, run) if swap is not None else None
    if swap is not None and token is None and explicit_layer:  # the layer is not fed by any input
        raise _no_embedding_error(model, swap.name)
    roles = [_role(x, batch, i == token) for i, x in enumerate(inputs)]
    if not any(r in (FLOAT, TOKEN) for r in roles):
        raise _no_embedding_error(model, swap.name if swap is not None else None)
    xs, bgs = [], []
    for i, (role, x, b) in enumerate(zip(roles, inputs, baselines)):
        if role not in (FLOAT, TOKEN):
            continue
        if not isinstance(b, Tensor) or b.ndim == 0 or b.shape[0] == 0:
            got = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
            allowed = "a non-empty batch (N, ...) of background samples (every floating input is explained"
            allowed += "; pass masks as integer or bool tensors)"
            raise ValueError(expected(f"baselines[{i}]", allowed, got))
        b = (b.clone() if b.is_inference() else b).to(device)
        if role == TOKEN and swap is not None:
            x = embed_tokens(swap.layer, x, x.shape[1])
            if not b.dtype.is_floating_point:
                b = embed_tokens(swap.layer, b, x.shape[1])
        if tuple(b.shape[1:]) != tuple(x.shape[1:]):
            allowed = f"background samples shaped like inputs[{i}] (N, {', '.join(map(str, x.shape[1:]))})"
            raise ValueError(expected(f"baselines[{i}]", allowed, tuple(b.shape)))
        xs.append(x.detach())
        bgs.append(b.detach().to(x.dtype))
    if len({b.shape[0] for b in bgs}) != 1:
        got = [b.shape[0] for b in bgs]
        raise ValueError(expected("baselines", "the same number of background samples in every entry", got))
    return Prepared(model, forward_fn, inputs, tuple(roles), xs, bgs, target, swap, batch, out_device)


def pass_through_groups(prep: Prepared) -> list[list[int]]:
    """Probes whose passed-through inputs are identical (they share the background's outputs)."""
    rows = [x for role, x in zip(prep.roles, prep.inputs) if role == ROWS]
    if not rows:
        return [list(range(prep.batch))]
    groups: dict[bytes, list[int]] = {}
    flat = [x.reshape(prep.batch, -1).contiguous().cpu().view(torch.uint8) for x in rows]
    for b in range(prep.batch):
        key = b"|".join(f[b].numpy().tobytes() for f in flat)
        groups.setdefault(key, []).append(b)
    return list(groups.values())
