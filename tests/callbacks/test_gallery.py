"""The confidently-wrong gallery: which mistakes it keeps, and the SHAP explanations it joins (ring b)."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader

from lightning_xai import CalibrationCallback, SHAPCallback
from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks._gallery import Gallery
from lightning_xai.demo import ShapesCNN
from tests.helpers import FAST, TextModel, Tokens, read_events, tiny_trainer


def _png(root: Path) -> Path:
    (png,) = root.rglob("confidently_wrong.png")
    return png


def test_keeps_token_inputs_of_the_most_confident_mistakes() -> None:
    g = Gallery(3)
    ids = torch.arange(40).reshape(8, 5)
    mask = torch.ones(8, 5, dtype=torch.long)
    mask[:, 4] = 0
    logits = torch.tensor([[4.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.1], [1.0, 0.0], [0.0, 5.0], [2.5, 0.0],
                           [0.0, 9.0]])
    labels = torch.tensor([1, 0, 1, 0, 1, 1, 1, 1])  # wrong: rows 0, 1, 2, 3, 4, 6 (5 and 7 are right)
    for part in (slice(0, 4), slice(4, 8)):  # two batches; the second one's mistakes are less confident
        inputs = ModelInputs(kwargs={"input_ids": ids[part], "attention_mask": mask[part]})
        g.offer(logits[part], labels[part], inputs)
    assert [round(c, 3) for c in g.confidence.tolist()] == [0.982, 0.953, 0.924]
    assert [m.inputs.kwargs["input_ids"][0, 0].item() for m in g.kept] == [0, 10, 30]  # rows 0, 2, 6
    assert [(m.label, m.pred) for m in g.kept] == [(1, 0), (1, 0), (1, 0)]
    for m in g.kept:  # copies of one row each: the batches are not kept alive
        assert m.inputs.kwargs["input_ids"].shape == (1, 5) and m.inputs.kwargs["attention_mask"][0, 4] == 0
        assert m.inputs.kwargs["input_ids"].untyped_storage().nbytes() == 5 * 8


def test_probabilities_are_not_softmaxed_again() -> None:
    g = Gallery(1)
    g.offer(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([1, 1]), ModelInputs(args=(torch.zeros(2, 3),)))
    assert g.confidence.tolist() == pytest.approx([0.9])


def test_text_model_gallery_shows_shap_token_plot(tmp_path: Path) -> None:
    seed_everything(0)
    loader = DataLoader(Tokens(32), batch_size=8)
    shap_cb = SHAPCallback(num_samples=4, on_error="raise", stages=("validate",), **FAST)
    calibration = CalibrationCallback(n_bins=5, gallery_size=4, stages=("validate",), on_error="raise")
    with warnings.catch_warnings(record=True) as record:  # the gallery draws SHAP's background (it runs first)
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [calibration, shap_cb], limit_val_batches=None).validate(TextModel(), loader)
    assert not [w for w in record if "confidently-wrong" in str(w.message)]
    assert "xai/calibration/confidently_wrong" in read_events(tmp_path)["images"]
    assert _png(tmp_path).stat().st_size > 10_000
    assert len(calibration._gallery.kept) == 4
    assert shap_cb.target == "pred" and shap_cb._background is not None


def test_image_model_without_gradcam_shows_signed_shap(tmp_path: Path, shapes_dm) -> None:
    seed_everything(0)
    shap_cb = SHAPCallback(num_samples=2, on_error="raise", stages=("validate",), target="label", **FAST)
    calibration = CalibrationCallback(n_bins=5, gallery_size=3, stages=("validate",), on_error="raise")
    tiny_trainer(tmp_path, [calibration, shap_cb]).validate(ShapesCNN(), datamodule=shapes_dm)
    assert "xai/calibration/confidently_wrong" in read_events(tmp_path)["images"]
    assert _png(tmp_path).exists()
    assert shap_cb.target == "label"  # lent to the gallery as "pred", then given back


class _Tokenizer:
    all_special_ids = [0]

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return ["[PAD]" if i == 0 else f"w{i}" for i in ids]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)


class _Sink:
    def __init__(self) -> None:
        self.event = SimpleNamespace(stage="validate", epoch=0, global_step=0)
        self.figures: dict = {}
        self.texts: dict = {}

    def figure(self, name: str, fig: object) -> None:
        self.figures[name] = fig

    def text(self, name: str, text: str) -> None:
        self.texts[name] = text


def test_failing_shap_warns_and_falls_back_to_decoded_text(monkeypatch: pytest.MonkeyPatch) -> None:
    shap_cb = SHAPCallback(tokenizer=_Tokenizer())

    def broken(trainer, model, inputs, target=None):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(shap_cb, "explain", broken)
    g = Gallery(2)
    ids = torch.tensor([[5, 6, 0], [7, 8, 9]])
    g.offer(torch.tensor([[3.0, 0.0], [0.0, 3.0]]), torch.tensor([1, 0]), ModelInputs(kwargs={"input_ids": ids}))
    sink, trainer = _Sink(), SimpleNamespace(callbacks=[shap_cb])
    with pytest.warns(RuntimeWarning, match="no SHAP values.*engine exploded"):
        g.render(sink, torch.nn.Linear(1, 1), trainer, str)  # type: ignore[arg-type]
    assert not sink.figures
    table = sink.texts["confidently_wrong"]
    assert "| 0 | true: 1 | pred: 0 (0.95) | w5 w6 |" in table and "w7 w8 w9" in table


def test_without_shap_or_tokenizer_a_table_of_mistakes() -> None:
    g = Gallery(1)
    g.offer(torch.tensor([[3.0, 0.0]]), torch.tensor([1]), ModelInputs(kwargs={"input_ids": torch.tensor([[5, 6]])}))
    sink, trainer = _Sink(), SimpleNamespace(callbacks=[])
    g.render(sink, torch.nn.Linear(1, 1), trainer, lambda i: ["neg", "pos"][i])  # type: ignore[arg-type]
    assert "| 0 | true: pos | pred: neg (0.95) |" in sink.texts["confidently_wrong"]
