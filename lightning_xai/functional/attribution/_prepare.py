"""The input contract of the attribution methods: which inputs are explained, tokens at their embedding layer, and
one ``nn.Module`` that scores the explained tensors (what captum differentiates). Pure torch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.functional.shap._tokens import (
    EmbeddingSwap,
    _no_embedding_error,
    embed_tokens,
    embedding_hook,
    resolve_embedding_layer,
)

__all__: list[str] = []

Target = Tensor | Callable[[Any], Tensor] | None


class Scored(nn.Module):
    """``forward(*explained, *rows)``: the model's scores (``(B, C)``, or the callable target's ``(B,)``) with the
    explained tensors put back in their slots (a token input's embeddings substituted at the embedding layer) and
    the batched pass-through inputs (``rows``: token ids, attention masks) in theirs. Captum sees this module."""

    def __init__(self, model: nn.Module, inputs: tuple[Any, ...], slots: tuple[int, ...], rows: tuple[int, ...],
                 token: int | None, swap: EmbeddingSwap | None, run: Callable[[nn.Module, tuple[Any, ...]], Any]):
        super().__init__()
        self.model = model
        self.template, self.slots, self.row_slots, self.token, self.swap, self.run = inputs, slots, rows, token, \
            swap, run

    def forward(self, *tensors: Tensor) -> Any:
        full = list(self.template)
        n = len(self.slots)
        for slot, value in zip(self.row_slots, tensors[n:]):
            full[slot] = value
        for slot, value in zip(self.slots, tensors[:n]):
            if slot == self.token and self.swap is not None:
                self.swap.substitute(value)  # the ids (a row input) still go in; the layer returns `value`
            else:
                full[slot] = value
        try:
            return self.run(self.model, tuple(full))
        finally:
            if self.swap is not None:
                self.swap.discard_pending()


@dataclass
class Prepared:
    """What a method needs: ``module(*explained, *rows)`` scores; ``explained`` in input order (tokens as
    ``(B, L, D)`` embeddings), ``slots`` their input positions, ``token`` the token input's position."""

    module: Scored
    explained: tuple[Tensor, ...]
    rows: tuple[Tensor, ...]
    slots: tuple[int, ...]
    token: int | None
    swap: EmbeddingSwap | None

    def scores(self, explained: tuple[Tensor, ...], target: Tensor | None) -> Tensor:
        """``(B,)`` score of the target (the callable target's score) at ``explained``."""
        with torch.no_grad():
            out = self.module(*explained, *self.rows)
        out = out.float()
        return out.reshape(-1) if target is None else out.gather(1, target.reshape(-1, 1))[:, 0]


@contextlib.contextmanager
def token_hook(model: nn.Module, embedding_layer: nn.Module | str | None) -> Iterator[EmbeddingSwap | None]:
    """The embedding hook of ``embedding_layer`` (``None``/``"auto"``: found; none in the model: no hook)."""
    if embedding_layer is None or (isinstance(embedding_layer, str) and embedding_layer == "auto"):
        try:
            embedding_layer = resolve_embedding_layer(model, None)[1]
        except ValueError:
            if any(isinstance(m, nn.Embedding) for m in model.modules()):
                raise  # several token embeddings of one vocabulary: the message asks for `embedding_layer`
            embedding_layer = None
    if embedding_layer is None:  # no embedding layer: integer inputs pass through
        yield None
        return
    with embedding_hook(model, embedding_layer) as swap:
        yield swap


def _token_slot(inputs: tuple[Any, ...], batch: int, swap: EmbeddingSwap,
                run: Callable[[tuple[Any, ...]], Any]) -> int | None:
    """Position of the integer input the embedding layer receives (one forward of the first probe)."""
    one = tuple(x[:1] if isinstance(x, Tensor) and x.ndim and x.shape[0] == batch else x for x in inputs)
    swap.last_input = None
    with torch.no_grad():
        run(one)
    seen = swap.last_input
    candidates = [i for i, x in enumerate(one) if isinstance(x, Tensor) and not x.is_floating_point() and x.ndim >= 2]
    if isinstance(seen, Tensor):
        for i in candidates:
            if one[i] is seen or (one[i].shape == seen.shape and torch.equal(one[i], seen.to(one[i].device))):
                return i
    return None


def prepare(model: nn.Module, inputs: tuple[Any, ...], forward_fn: Callable[..., Any] | None, target: Target,
            swap: EmbeddingSwap | None, explicit_layer: bool) -> Prepared:
    """Split ``inputs`` into explained tensors (floating ones, and the token ids as embeddings) and pass-through
    rows, and build the scoring module (a callable ``target`` scores the raw output)."""
    batch = next(x.shape[0] for x in inputs if isinstance(x, Tensor) and x.ndim > 0)
    inputs = tuple(x.detach().clone() if isinstance(x, Tensor) else x for x in inputs)

    def run(m: nn.Module, full: tuple[Any, ...]) -> Any:
        out = m(*full) if forward_fn is None else forward_fn(m, *full)
        return target(out) if callable(target) and not isinstance(target, Tensor) else out

    token = _token_slot(inputs, batch, swap, lambda full: run(model, full)) if swap is not None else None
    if swap is not None and token is None and explicit_layer:
        raise _no_embedding_error(model, swap.name)
    batched = [isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == batch for x in inputs]
    slots = tuple(i for i, x in enumerate(inputs) if batched[i] and (x.is_floating_point() or i == token))
    if not slots:
        raise _no_embedding_error(model, swap.name if swap is not None else None)
    rows = tuple(i for i in range(len(inputs)) if batched[i] and i not in slots or i == token)
    explained = tuple(embed_tokens(swap.layer, inputs[i], inputs[i].shape[1]) if i == token and swap is not None
                      else inputs[i] for i in slots)
    module = Scored(model, inputs, slots, rows, token, swap, run)
    return Prepared(module, tuple(e.detach() for e in explained), tuple(inputs[i] for i in rows), slots, token, swap)
