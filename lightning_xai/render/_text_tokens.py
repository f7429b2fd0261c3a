"""Tokens of one text sample: checked, padding dropped, word pieces joined, ranked and labelled."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from lightning_xai._checks import expected

_WORD_START = ("▁", "Ġ")


@dataclass
class _Token:
    index: int  # position in the input sequence
    raw: str
    text: str  # what is drawn
    value: float
    joined: bool  # continues the previous visible token's word
    word: str = ""  # the whole word it belongs to


def _float_list(name: str, values: Any, length: int) -> list[float]:
    if isinstance(values, Tensor):
        flat = values.detach().cpu().double().reshape(-1).tolist() if values.ndim <= 1 else None
    elif isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, str):
        try:
            flat = [float(v) for v in values]
        except (TypeError, ValueError):
            raise TypeError(expected(name, "a tensor or sequence of numbers", values)) from None
    else:
        raise TypeError(expected(name, "a 1-D tensor of shape (T,)", type(values).__name__))
    if flat is None or len(flat) != length:
        shape = tuple(values.shape) if isinstance(values, Tensor) else len(flat or [])
        raise ValueError(expected(name, f"of shape (T,) = ({length},), one per token", shape))
    return flat


def _tokens(tokens: Any, values: Any, mask: Any, prefix: str = "") -> list[_Token]:
    """Check one sample and return its visible tokens, word pieces marked."""
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(expected(f"{prefix}tokens", "a list of strings", tokens))
    count = len(tokens)
    scores = _float_list(f"{prefix}values", values, count)
    keep = [True] * count if mask is None else [bool(m) for m in _float_list(f"{prefix}mask", mask, count)]
    visible = [i for i in range(count) if keep[i]]
    pieces = [str(tokens[i]) for i in visible]
    marked = any(p.startswith(_WORD_START) for p in pieces)
    out: list[_Token] = []
    for i, raw in zip(visible, pieces):
        if marked:
            joined, text = not raw.startswith(_WORD_START), raw.lstrip("".join(_WORD_START))
        else:
            joined, text = raw.startswith("##") and len(raw) > 2, raw.removeprefix("##")
        out.append(_Token(i, raw, text or raw, scores[i], joined and bool(out)))
    start = 0
    for j in range(1, len(out) + 1):
        if j == len(out) or not out[j].joined:
            word = "".join(t.text for t in out[start:j])
            for t in out[start:j]:
                t.word = word
            start = j
    return out


def _top(tokens: list[_Token], top_k: int) -> list[_Token]:
    finite = [t for t in tokens if math.isfinite(t.value)]
    return sorted(finite, key=lambda t: -abs(t.value))[:top_k]


def _bar_labels(top: list[_Token], visible: list[_Token]) -> list[str]:
    """``"##ful (wonderful)"`` for pieces; ``"the @7"`` (input position) for tokens the sentence repeats."""
    counts = Counter(t.raw for t in visible)
    labels = [_short(t.raw if t.word == t.text else f"{t.raw} ({t.word})") for t in top]
    labels = [f"{label} @{t.index}" if counts[t.raw] > 1 else label for label, t in zip(labels, top)]
    return labels


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _top_line(title: str | None, top: list[_Token]) -> str:
    listed = " · ".join(f"{_short(t.raw)} {t.value:+.2g}" for t in top)
    head = f"{title} — " if title else ""
    return f"{head}top: {listed}" if top else f"{head}(no finite values)"
