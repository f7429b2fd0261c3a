"""The steps of an attention explanation that place tokens: which input is explained, the forward that scores it,
how many prefix tokens the grid drops, which row is read (CLIP's end-of-text token), the per-head rows of the raw
probabilities, and the clip grid of divided space-time attention (TimeSformer)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai._inputs import Scorer, token_key
from lightning_xai.adapters import ModelInputs
from lightning_xai.functional import video_reshape_transform
from lightning_xai.functional.attention import DividedAttention, divided_grid, query_scores, token_grid_scores

__all__ = ["check_layer", "divided_reshape", "end_of_text", "explained_key", "head_scores", "prefix_tokens",
           "scored_forward"]


def check_layer(layer: Any) -> int | None:
    """``layer`` if it is ``None`` or an int (the bounds are checked against the model's layers later).

    Example:
        >>> check_layer(-1)
        -1
    """
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ValueError(expected("layer", "None or a layer index (negative from the end)", layer))
    return layer


def explained_key(inputs: ModelInputs, input_key: int | str | None) -> int | str:
    """The explained input: ``input_key``, else the token ids, else the first floating input.

    Example:
        >>> explained_key(ModelInputs((torch.ones(2, 3, 8, 8),)), None)
        0
    """
    found = {**dict(enumerate(inputs.args)), **inputs.kwargs}
    key = input_key if input_key is not None else token_key(inputs)
    if key is None:
        key = next((k for k, v in found.items() if isinstance(v, Tensor) and v.is_floating_point()
                    and v.dim() >= 2), None)
    if key is None or key not in found or not isinstance(found[key], Tensor) or found[key].dim() < 2:
        desc = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in found.items() if isinstance(v, Tensor))
        raise ValueError(expected("input_key", "the position or keyword of a batched input (token ids, image, "
                                  f"clip, spectrogram or waveform) among [{desc}]", input_key))
    return key


def scored_forward(scorer: Scorer, inputs: ModelInputs, slots: list[int | str],
                   scoring: bool) -> Callable[..., Any]:
    """``fwd(model, *tensors)`` with the tensors in ``slots`` order (positions, then keywords): the scorer's output
    (``scoring``: for a callable target) or its logits.

    Example:
        >>> fwd = scored_forward(Scorer(), ModelInputs((torch.ones(1, 2),)), [0], False)
        >>> fwd(nn.Linear(2, 3), torch.ones(1, 2)).shape
        torch.Size([1, 3])
    """
    n_args = len(inputs.args)

    def fwd(m: nn.Module, *tensors: Tensor) -> Any:
        out = scorer(m, ModelInputs(tuple(tensors[:n_args]), dict(zip(slots[n_args:], tensors[n_args:])),
                                    inputs.labels, inputs.mask))
        return out if scoring else scorer.logits(out)

    return fwd


def divided_reshape(model: nn.Module, divided: DividedAttention) -> Callable[[Tensor], Tensor]:
    """The reshape transform of the clip's tokens of divided space-time attention (class token, then frame-major
    patches, as :func:`~lightning_xai.functional.attention.divided_rollout` orders them) to
    ``(B, D, frames, grid_h, grid_w)``.

    Example:
        >>> d = DividedAttention((torch.ones(4, 1, 2, 2) / 2,), (torch.ones(2, 1, 5, 5) / 5,))
        >>> divided_reshape(nn.Identity(), d)(torch.zeros(1, 9, 3)).shape
        torch.Size([1, 3, 2, 2, 2])
    """
    grid = (divided.frames, *divided_grid(model, divided.patches))
    return partial(video_reshape_transform, grid=grid, num_prefix_tokens=1)


def head_scores(raw: Tensor, query: int | Tensor | None, mask: Tensor | None,
                reshape: Callable[[Tensor], Tensor] | None) -> Tensor:
    """The row read of every layer and head of ``(P, layers, heads, N, N)`` probabilities, on the token grid.

    Example:
        >>> head_scores(torch.eye(3).expand(1, 2, 4, 3, 3), 0, None, None)[0, 1, 2].tolist()
        [1.0, 0.0, 0.0]
    """
    probes, layers, heads = raw.shape[:3]
    repeat = layers * heads
    if isinstance(query, Tensor):
        query = query.reshape(-1)[:probes].repeat_interleave(repeat)
    if mask is not None:
        mask = mask[:probes].repeat_interleave(repeat, 0)
    rows = query_scores(raw.flatten(0, 2), query, mask)
    grid = rows if reshape is None else token_grid_scores(rows, reshape)
    return grid.reshape(probes, layers, heads, *grid.shape[1:])


def prefix_tokens(reshape: Callable[[Tensor], Tensor] | None, count: int) -> tuple[int, bool]:
    """``(prefix tokens dropped by reshape, is token 0 among them)``: the transform applied to the token indices.

    Example:
        >>> prefix_tokens(partial(video_reshape_transform, grid=(1, 2, 2), num_prefix_tokens=1), 5)
        (1, True)
    """
    if reshape is None:
        return 0, False
    try:
        placed = reshape(torch.arange(count, dtype=torch.float32)[None, :, None])
    except ValueError as err:
        raise ValueError(expected("reshape_transform", f"a transform accepting the model's {count} attention tokens",
                                  getattr(reshape, "__name__", repr(reshape))) + f" It raised: {err}") from err
    kept = {int(i) for i in placed.flatten().tolist()}
    return count - len(kept), 0 not in kept


def end_of_text(model: nn.Module, ids: Tensor) -> Tensor | None:
    """CLIP's text tower pools its end-of-text token (the largest id with the legacy ``eos_token_id == 2``, else the
    first ``eos_token_id``): that token's position per sample, or ``None`` for other models.

    Example:
        >>> end_of_text(nn.Linear(2, 2), torch.tensor([[1, 5, 2]])) is None
        True
    """
    for m in model.modules():
        config = getattr(m, "config", None)
        if getattr(config, "model_type", None) == "clip_text_model" or type(m).__name__.endswith("TextTransformer"):
            eos = getattr(m, "eos_token_id", getattr(config, "eos_token_id", None))
            if isinstance(eos, int):
                return ids.argmax(-1) if eos == 2 else (ids == eos).int().argmax(-1)
    return None

