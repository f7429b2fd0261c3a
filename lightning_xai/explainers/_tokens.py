"""Token strings and which tokens to show, for every explainer of token inputs (a tokenizer, or ``#<id>``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["load_tokenizer", "shown_tokens", "token_strings"]


def load_tokenizer(tokenizer: Any) -> Any:
    """A Hugging Face tokenizer: as given, or loaded from a local path (``AutoTokenizer.from_pretrained``)."""
    if isinstance(tokenizer, str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer)
    return tokenizer


def token_strings(tokenizer: Any, ids: Tensor) -> list[list[str]]:
    """Token strings of ``(B, L)`` ids through ``tokenizer``, else ``#<id>``.

    Example:
        >>> token_strings(None, torch.tensor([[5, 7]]))
        [['#5', '#7']]
    """
    if tokenizer is not None:
        return [tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
    return [[f"#{int(i)}" for i in row] for row in ids]


def shown_tokens(tokenizer: Any, ids: Tensor, attention: Tensor | None) -> Tensor:
    """True for the tokens to show: attended, and not special tokens of the tokenizer.

    Example:
        >>> shown_tokens(None, torch.tensor([[5, 7, 0]]), torch.tensor([[1, 1, 0]])).tolist()
        [[True, True, False]]
    """
    keep = torch.ones_like(ids, dtype=torch.bool) if attention is None else attention.bool()
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    if specials:
        keep &= ~torch.isin(ids, torch.tensor(sorted(specials), device=ids.device))
    return keep
