"""Baselines of the explained tensors: zeros, a blur, the mean of a background batch, or given tensors (token ids are
embedded). Pure torch."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.functional.attribution._defaults import blur
from lightning_xai.functional.attribution._prepare import Prepared
from lightning_xai.functional.shap._tokens import embed_tokens

__all__: list[str] = []

SPATIAL = ("image", "video", "spectrogram")


def _given(b: Any, e: Tensor, prep: Prepared, slot: int, name: str) -> Tensor:
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        return torch.full_like(e, float(b))
    if not isinstance(b, Tensor):
        raise TypeError(expected(name, "'zeros', 'blur', 'mean', a number or a tensor per explained input",
                                 type(b).__name__))
    b = b.detach().to(e.device)
    if slot == prep.token and prep.swap is not None and not b.is_floating_point():  # baseline token ids
        ids = b if b.dim() == 2 else b.reshape(1, -1)
        if ids.shape[1] != e.shape[1] or ids.shape[0] not in (1, e.shape[0]):
            raise ValueError(expected(name, f"token ids shaped like the input ({e.shape[0]}, {e.shape[1]}) or "
                                      f"({e.shape[1]},)", tuple(b.shape)))
        return embed_tokens(prep.swap.layer, ids, e.shape[1]).expand_as(e).to(e.dtype)
    if tuple(b.shape) == tuple(e.shape[1:]):
        b = b.unsqueeze(0)
    if b.dim() != e.dim() or b.shape[0] not in (1, e.shape[0]) or tuple(b.shape[1:]) != tuple(e.shape[1:]):
        what = "embeddings" if slot == prep.token else "the input"
        raise ValueError(expected(name, f"a tensor shaped like {what} {tuple(e.shape)} (or one sample "
                                  f"{tuple(e.shape[1:])})", tuple(b.shape)))
    return b.to(e.dtype).expand_as(e).clone()


def resolve_baselines(spec: Any, prep: Prepared, kinds: tuple[str, ...], background: tuple[Any, ...] | None,
                      sigma: float | None) -> tuple[Tensor, ...]:
    """One baseline per explained tensor, shaped like it.

    ``spec``: ``"zeros"``; ``"blur"`` (images, clips, spectrograms blurred over their last two dims, other inputs
    zeros); ``"mean"`` (the mean over ``background``, a batch of every input, else over the explained batch;
    token ids embedded); a number; or a tensor (one explained input) or tuple of them, one per explained input
    (``None``: zeros), or a dict of them by input position, shaped like the input or one sample of it (token
    inputs: ids, or embeddings).
    """
    explained, slots = prep.explained, prep.slots
    if isinstance(spec, str):
        if spec == "zeros":
            return tuple(torch.zeros_like(e) for e in explained)
        if spec == "blur":
            if not any(kinds[s] in SPATIAL for s in slots):
                raise ValueError(expected("baseline", "'zeros', 'mean' or a tensor for inputs without an image, "
                                          f"clip or spectrogram (kinds {[kinds[s] for s in slots]})", spec))
            return tuple(blur(e, sigma) if kinds[s] in SPATIAL else torch.zeros_like(e)
                         for e, s in zip(explained, slots))
        if spec == "mean":
            out = []
            for e, s in zip(explained, slots):
                rows = background[s] if background is not None else None
                if isinstance(rows, Tensor) and rows.dim() > 0:
                    rows = rows.detach().to(e.device)
                    if s == prep.token and prep.swap is not None:
                        rows = embed_tokens(prep.swap.layer, rows, e.shape[1])
                    out.append(_given(rows.float().mean(0), e, prep, s, "baseline"))
                else:
                    out.append(e.mean(0, keepdim=True).expand_as(e).clone())
            return tuple(out)
        raise ValueError(expected("baseline", "'zeros', 'blur', 'mean', a number or a tensor", spec))
    if isinstance(spec, dict):  # by input position; inputs not named take zeros
        unknown = [k for k in spec if k not in slots]
        if unknown:
            raise ValueError(expected("baseline", f"keyed by explained inputs {list(slots)}", unknown))
        spec = tuple(spec.get(s) for s in slots)
    if isinstance(spec, (list, tuple)):
        if len(spec) != len(explained):
            raise ValueError(expected("baseline", f"one entry per explained input ({len(explained)})", len(spec)))
        return tuple(torch.zeros_like(e) if b is None else _given(b, e, prep, s, f"baseline[{j}]")
                     for j, (b, e, s) in enumerate(zip(spec, explained, slots)))
    if len(explained) != 1 and isinstance(spec, Tensor):
        raise ValueError(expected("baseline", f"a tuple of one tensor per explained input ({len(explained)})",
                                  f"one tensor of shape {tuple(spec.shape)}"))
    return tuple(_given(spec, e, prep, s, "baseline") for e, s in zip(explained, slots))
