"""Attention explainers: the raw attention of one layer (``"attention"``), attention rollout (``"rollout"``) and
gradient-weighted rollout (``"grad_rollout"``), one small subclass of :class:`AttentionExplainer` each.

One forward pass per batch (plus one ``torch.autograd.grad`` for ``grad_rollout``) records every layer's exact
attention probabilities whatever implementation the model runs (see
:func:`~lightning_xai.functional.attention.capture_attention`); the model is restored exactly. The token scores are
one row of the resulting ``(N, N)`` matrix (the class token's, or the mean row) put back on the explained input:
per token for text, on the patch grid for images (class/distillation/register tokens dropped), on tubelets for video,
on frequency x time patches (or frames) for spectrograms, and as ``maps`` upsampled to the input.

Divided space-time attention (TimeSformer: temporal attention per patch position, then spatial attention per frame)
has no single matrix per layer: ``rollout`` and ``grad_rollout`` compose the two sub-attentions of each block into one
matrix over the clip's ``1 + frames * patches`` tokens (class token, then frame-major patches; the definition and its
choices are :mod:`lightning_xai.functional.attention._divided`'s docstring, and each explanation records them under
``settings["divided_space_time"]``); ``"attention"`` shows the spatial attention of one layer spread over those
tokens (the temporal attention has no class-token row to read). Scores land on ``(frames, grid_h, grid_w)``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lightning_xai.adapters import ModelInputs
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.emb, self.attn, self.head = nn.Embedding(20, 8), nn.MultiheadAttention(8, 2, batch_first=True), \
nn.Linear(8, 2)
    ...     def forward(self, ids):
    ...         h = self.emb(ids)
    ...         return self.head(self.attn(h, h, h, need_weights=False)[0][:, 0])
    >>> e = GradRolloutExplainer().explain(Net(), ModelInputs((torch.randint(0, 20, (2, 6)),)))
    >>> e.scores.shape, e.values["input"].shape, e.modules
    (torch.Size([2, 6]), torch.Size([2, 6]), ('attn',))
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor

from lightning_xai._checks import check_choice, check_non_negative_int, expected
from lightning_xai.explainers._attention_base import AttentionExplainer, AttentionExplanation
from lightning_xai.functional.attention import (
    HEAD_FUSIONS,
    AttentionCapture,
    DividedAttention,
    divided_grad_rollout,
    divided_rollout,
    fuse_heads,
    grad_rollout,
    rollout,
    spread_spatial,
    stack_layers,
)

__all__ = [
    "ATTENTION_EXPLAINERS",
    "AttentionExplainer",
    "AttentionExplanation",
    "GradRolloutExplainer",
    "RawAttentionExplainer",
    "RolloutExplainer",
]


class RawAttentionExplainer(AttentionExplainer):
    """The attention of one layer (``layer``, default the last), heads fused by ``head_fusion``; the explanation also
    keeps every layer's and head's probabilities of the first ``max_raw`` probes (``raw``).

    Args:
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        max_raw: probes whose ``(layers, heads, N, N)`` probabilities are kept.
    """

    name = "attention"

    def __init__(self, head_fusion: Literal["mean", "max", "min"] = "mean", max_raw: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head_fusion = check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
        self.max_raw = check_non_negative_int("max_raw", max_raw)

    def options(self) -> dict[str, Any]:
        return {"head_fusion": self.head_fusion, "max_raw": self.max_raw}

    def matrix(self, attentions: Tensor | DividedAttention, capture: AttentionCapture) -> Tensor:
        layers = attentions.shape[1] if isinstance(attentions, Tensor) else attentions.layers
        if self.layer is not None and not -layers <= self.layer < layers:
            raise ValueError(expected("layer", f"None or a layer index in [{-layers}, {layers - 1}]", self.layer))
        index = -1 if self.layer is None else self.layer
        if isinstance(attentions, DividedAttention):  # the spatial attention over the clip's tokens
            return spread_spatial(fuse_heads(attentions.spatial[index].float(), self.head_fusion), attentions.frames)
        return fuse_heads(attentions[:, index], self.head_fusion)


class RolloutExplainer(AttentionExplainer):
    """Attention rollout (Abnar & Zuidema 2020), see :func:`~lightning_xai.functional.attention.rollout`.

    Args:
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction in ``[0, 1)`` of each layer's smallest off-diagonal weights dropped.
    """

    name = "rollout"

    def __init__(self, head_fusion: Literal["mean", "max", "min"] = "mean", discard_ratio: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head_fusion = check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
        if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) \
                or not 0 <= discard_ratio < 1 or math.isnan(discard_ratio):
            raise ValueError(expected("discard_ratio", "a number in [0, 1)", discard_ratio))
        self.discard_ratio = float(discard_ratio)

    def options(self) -> dict[str, Any]:
        return {"head_fusion": self.head_fusion, "discard_ratio": self.discard_ratio}

    def matrix(self, attentions: Tensor | DividedAttention, capture: AttentionCapture) -> Tensor:
        if isinstance(attentions, DividedAttention):
            return divided_rollout(attentions, self.head_fusion, self.discard_ratio, self.layer)
        return rollout(attentions, self.head_fusion, self.discard_ratio, self.layer)


class GradRolloutExplainer(AttentionExplainer):
    """Gradient-weighted rollout (Chefer et al. 2021, generic rule) of the explained class's logit, see
    :func:`~lightning_xai.functional.attention.grad_rollout`."""

    name = "grad_rollout"
    needs_gradients = True

    def matrix(self, attentions: Tensor | DividedAttention, capture: AttentionCapture) -> Tensor:
        if isinstance(attentions, DividedAttention):
            return divided_grad_rollout(attentions, self.layer)
        return grad_rollout(attentions, stack_layers(capture.gradients or (), "gradients"), self.layer)


#: every attention explainer by its registry name
ATTENTION_EXPLAINERS: dict[str, type[AttentionExplainer]] = {
    cls.name: cls for cls in (RawAttentionExplainer, RolloutExplainer, GradRolloutExplainer)
}
