"""Explaining integer token inputs at the output of their embedding layer.

A forward hook on the embedding layer substitutes the (interpolated) embeddings the explanation asks for, so
the user's model needs no ``inputs_embeds`` argument and no change. Pure torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._guard import explanation_mode

__all__ = [
    "EmbeddingSwap",
    "embed_tokens",
    "embedding_hook",
    "find_embedding_layer",
    "resolve_embedding_layer",
    "shap_setup",
]


def _embedding_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Embedding)]


def _name_of(model: nn.Module, layer: nn.Module) -> str | None:
    return next((name for name, module in model.named_modules() if module is layer), None)


def _hf_input_embeddings(model: nn.Module) -> nn.Module | None:
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter):
        return None
    try:
        layer = getter()
    except (NotImplementedError, AttributeError):  # transformers raises these for models without a base model:
        return None  # not an error here, the caller then looks for the model's nn.Embedding itself
    return layer if isinstance(layer, nn.Module) and _name_of(model, layer) is not None else None


def _no_embedding_error(model: nn.Module, got: Any) -> ValueError:
    names = _embedding_names(model)
    listing = (
        f" nn.Embedding modules of {type(model).__name__}: {names}."
        if names
        else f" {type(model).__name__} has no nn.Embedding module: pass token embeddings as a float input."
    )
    allowed = "a token embedding layer of the model that receives one of the integer inputs (module or name)"
    return ValueError(expected("embedding_layer", allowed, got) + listing)


def find_embedding_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """Find the token embedding layer: a Hugging Face model's ``get_input_embeddings()``, else the first
    ``nn.Embedding``. Several ``nn.Embedding`` of one vocabulary (a Teacher's and a Student's, say) are ambiguous:
    the error lists them, so that ``embedding_layer`` names the one feeding the explained output.

    Args:
        model: The model.

    Returns:
        ``(name, module)`` with ``name`` as listed by ``model.named_modules()``.

    Raises:
        ValueError: If the model has no ``nn.Embedding``, or several of the same vocabulary size (the message
            names ``embedding_layer``).

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
        >>> find_embedding_layer(net)
        ('0', Embedding(10, 4))
    """
    layer = _hf_input_embeddings(model)
    if layer is not None:
        return _name_of(model, layer) or "", layer
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if not found:
        raise _no_embedding_error(model, None)
    name, module = found[0]
    same = [(n, m) for n, m in found if m.num_embeddings == module.num_embeddings]
    if len(same) > 1:
        listed = ", ".join(f"{n} ({m.num_embeddings}x{m.embedding_dim})" for n, m in same)
        raise ValueError(expected("embedding_layer", "set: the model has several token embeddings of one vocabulary "
                                  f"({listed}); name the one feeding the explained output", None))
    return name, module


def resolve_embedding_layer(
    model: nn.Module, embedding_layer: nn.Module | str | None
) -> tuple[str, nn.Module]:
    """``(name, module)`` of an embedding layer given as a module, a dotted name or ``None`` (find it).

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
        >>> resolve_embedding_layer(net, "0")[1]
        Embedding(10, 4)
    """
    if embedding_layer is None:
        return find_embedding_layer(model)
    if isinstance(embedding_layer, str):
        modules = dict(model.named_modules())
        if embedding_layer in modules and embedding_layer:
            return embedding_layer, modules[embedding_layer]
        raise _no_embedding_error(model, embedding_layer)
    if isinstance(embedding_layer, nn.Module):
        name = _name_of(model, embedding_layer)
        if name is None:
            raise _no_embedding_error(
                model, type(embedding_layer).__name__ + " (not a submodule of the model)"
            )
        return name, embedding_layer
    raise TypeError(
        expected("embedding_layer", "an nn.Module, a dotted module name or None", embedding_layer)
    )


class EmbeddingSwap:
    """The handle :func:`embedding_hook` yields.

    ``substitute(embeddings)`` makes the next call of the layer return ``embeddings`` instead of its own
    output (once; later calls in the same forward are left alone). The first call that is not substituted
    after ``last_input`` was set to ``None`` records the tensor it was given there.

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 2), nn.Flatten())
        >>> with embedding_hook(net) as swap:
        ...     swap.substitute(torch.ones(1, 3, 2))
        ...     replaced = net(torch.tensor([[1, 2, 3]]))
        ...     swap.last_input = None
        ...     _ = net(torch.tensor([[4, 5, 6]]))
        >>> replaced.tolist(), swap.name, swap.last_input.tolist()
        ([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]], '0', [[4, 5, 6]])
    """

    def __init__(self, name: str, layer: nn.Module) -> None:
        self.name = name
        self.layer = layer
        self.last_input: Any = None
        self._pending: Tensor | None = None

    def substitute(self, embeddings: Tensor) -> None:
        """Return ``embeddings`` from the layer's next call."""
        self._pending = embeddings

    def discard_pending(self) -> bool:
        """Drop a substitution the layer did not use; True if there was one."""
        pending, self._pending = self._pending is not None, None
        return pending

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self._pending is None:
            if self.last_input is None:  # the first call since the caller reset it
                self.last_input = args[0] if args else None
            return None
        value, self._pending = self._pending, None
        if not isinstance(output, Tensor) or tuple(output.shape) != tuple(value.shape):
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            allowed = f"a layer whose output has the shape of the substituted embeddings {tuple(value.shape)}"
            raise ValueError(expected("embedding_layer", allowed, got))
        return value.to(output.dtype)


@contextlib.contextmanager
def embedding_hook(
    model: nn.Module, embedding_layer: nn.Module | str | None = None
) -> Iterator[EmbeddingSwap]:
    """Hook a token embedding layer so that explanations can replace its output; the hook is removed on exit.

    Args:
        model: The model.
        embedding_layer: The layer (module or dotted name); ``None``: :func:`find_embedding_layer` finds it.

    Yields:
        An :class:`EmbeddingSwap`: ``swap.substitute(e)`` before a forward pass makes the layer return ``e``.

    Raises:
        ValueError: If no such layer exists (the message lists the model's ``nn.Embedding`` modules).

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 2))
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> with embedding_hook(net) as swap:
        ...     swap.substitute(torch.zeros(1, 3, 4))
        ...     out = net(ids)
        >>> torch.allclose(out, net[2].bias[None]), len(net[0]._forward_hooks)
        (True, 0)
    """
    name, layer = resolve_embedding_layer(model, embedding_layer)
    swap = EmbeddingSwap(name, layer)
    handle = layer.register_forward_hook(swap._hook)
    try:
        yield swap
    finally:
        handle.remove()


def _pad_id(layer: nn.Module) -> int:
    padding_idx = getattr(layer, "padding_idx", None)
    return int(padding_idx) if isinstance(padding_idx, int) and padding_idx >= 0 else 0


def embed_tokens(layer: nn.Module, ids: Tensor, length: int) -> Tensor:
    """Embeddings of background token ids, padded (with the layer's ``padding_idx``, else 0) or truncated to
    ``length`` tokens.

    Example:
        >>> embed_tokens(nn.Embedding(10, 4, padding_idx=0), torch.tensor([[5, 6]]), 3).shape
        torch.Size([1, 3, 4])
    """
    if ids.shape[1] > length:
        ids = ids[:, :length]
    elif ids.shape[1] < length:
        pad = torch.full(
            (ids.shape[0], length - ids.shape[1]), _pad_id(layer), dtype=ids.dtype, device=ids.device
        )
        ids = torch.cat([ids, pad], dim=1)
    with torch.no_grad():
        return layer(ids).detach()


@contextlib.contextmanager
def _hooked(model: nn.Module, embedding_layer: Any) -> Iterator[EmbeddingSwap | None]:
    if embedding_layer is None:
        yield None
        return
    if isinstance(embedding_layer, str) and embedding_layer == "auto":
        try:
            embedding_layer = resolve_embedding_layer(model, None)[1]
        except ValueError:
            if any(isinstance(m, nn.Embedding) for m in model.modules()):
                raise  # ambiguous: several token embeddings
            embedding_layer = None
        if embedding_layer is None:  # no embedding layer: integer inputs are passed through
            yield None
            return
    with embedding_hook(model, embedding_layer) as swap:
        yield swap


@contextlib.contextmanager
def shap_setup(model: nn.Module, embedding_layer: Any, freeze: bool = False) -> Iterator[
        tuple[EmbeddingSwap | None, bool]]:
    """What every SHAP engine runs in: ``explanation_mode`` (the model restored afterwards) with the embedding hook
    of token inputs; ``freeze`` turns parameter gradients off (gradients to the inputs only; the guard restores
    the flags). Yields the swap and whether the embedding layer was named explicitly (not ``"auto"``).

    Example:
        >>> net = nn.Linear(2, 1)
        >>> with shap_setup(net, None, freeze=True) as (swap, explicit):
        ...     frozen = not net.weight.requires_grad
        >>> swap, explicit, frozen, net.weight.requires_grad
        (None, False, True, True)
    """
    explicit = embedding_layer is not None and not (isinstance(embedding_layer, str) and embedding_layer == "auto")
    with explanation_mode(model), _hooked(model, embedding_layer) as swap:
        if freeze:
            for parameter in model.parameters():
                parameter.requires_grad_(False)
        yield swap, explicit
