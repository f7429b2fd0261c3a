"""Attention explanations in pure torch: exact attention probabilities captured from any implementation, attention
rollout, gradient-weighted rollout, and their token scores put back on the input.

* :func:`capture_attention` runs the model once with every attention layer's ``(B, heads, q, k)`` probabilities
  recorded (Hugging Face models under eager attention for the pass, ``nn.MultiheadAttention`` with
  ``need_weights=True``), and optionally the explained score's gradient to them; the model is restored exactly.
  :func:`find_attention_modules` says which modules those are (``attention_modules=`` overrides it; Swin-style
  window attention is refused).
* Divided space-time attention (TimeSformer) is captured per block as its temporal and spatial sub-attentions;
  :func:`divided_rollout` and :func:`divided_grad_rollout` compose them into one matrix over the clip's tokens per
  block (the definition: ``_divided``'s docstring) and :func:`spread_spatial` shows the spatial one over them.
* :func:`rollout` (Abnar & Zuidema 2020) and :func:`grad_rollout` (Chefer et al. 2021, generic rule) turn the
  captured layers into a ``(B, N, N)`` matrix; :func:`query_scores` reads one score per token from it (the class
  token's row or the mean row); :func:`token_grid_scores` and :func:`upsample_scores` put those on the input.

Private modules, one job each: ``_sites`` (which modules), ``_capture`` (the forward and gradients), ``_rollout``
(the maths), ``_divided`` (the maths through divided space-time attention), ``_layout`` (tokens to the input's grid).

Example:
    >>> a = torch.softmax(torch.randn(2, 3, 2, 5, 5), -1)  # (B, layers, heads, N, N)
    >>> query_scores(rollout(a, head_fusion="max", discard_ratio=0.5), 0).shape
    torch.Size([2, 5])
"""

import torch  # noqa: F401  (the docstring example uses it)

from lightning_xai.functional.attention._capture import AttentionCapture, capture_attention, eager_attention
from lightning_xai.functional.attention._divided import (
    DIVIDED_RULES,
    DividedAttention,
    divided_attention,
    divided_grad_rollout,
    divided_grid,
    divided_rollout,
    spread_spatial,
)
from lightning_xai.functional.attention._layout import token_grid_scores, upsample_scores
from lightning_xai.functional.attention._rollout import (
    HEAD_FUSIONS,
    fuse_heads,
    grad_rollout,
    query_scores,
    rollout,
    stack_layers,
)
from lightning_xai.functional.attention._sites import (
    AttentionSite,
    attention_candidates,
    divided_sites,
    find_attention_modules,
    refuse_window_attention,
)

__all__ = [
    "ATTENTION_METHODS",
    "DIVIDED_RULES",
    "HEAD_FUSIONS",
    "AttentionCapture",
    "AttentionSite",
    "DividedAttention",
    "attention_candidates",
    "capture_attention",
    "divided_attention",
    "divided_grad_rollout",
    "divided_grid",
    "divided_rollout",
    "divided_sites",
    "eager_attention",
    "find_attention_modules",
    "fuse_heads",
    "grad_rollout",
    "query_scores",
    "refuse_window_attention",
    "rollout",
    "spread_spatial",
    "stack_layers",
    "token_grid_scores",
    "upsample_scores",
]

#: the attention explanation methods: raw attention of one layer, rollout, gradient-weighted rollout
ATTENTION_METHODS = ("attention", "rollout", "grad_rollout")
