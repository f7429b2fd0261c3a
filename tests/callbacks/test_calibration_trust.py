"""Calibration results users can trust (issue 11, items 3, 4 and 8): a declared ``input`` that the data contradict
is said loudly, ``calibration.json`` keeps its per-bin lists, and a bad label names ``labels``/``batch_to_inputs``."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from lightning_xai import CalibrationCallback
from lightning_xai.adapters import ModelInputs
from lightning_xai.demo import ShapesCNN
from lightning_xai.functional.calibration import _common as _calibration_common
from lightning_xai.functional.calibration import (
    calibration_state,
    calibration_update,
    expected_calibration_error,
    fit_temperature,
)
from tests.helpers import shapes_loaders


class _SoftmaxCNN(ShapesCNN):
    """A model whose forward ends in ``.softmax(-1)``: it returns probabilities, not logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(-1)


def _trainer(tmp_path: Path, callbacks: list[Any], **kw: Any) -> Trainer:
    opts: dict[str, Any] = dict(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    opts.update(kw)
    return Trainer(callbacks=callbacks, **opts)


def _summary(root: Path, stage: str = "fit", epoch: int = 0, step: int = 4) -> dict[str, Any]:
    (path,) = root.glob(f"xai/calibration/{stage}-epoch={epoch}-step={step}*/calibration.json")

    def no_nan(token: str) -> float:
        raise AssertionError(f"calibration.json holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_nan)


def _predictions(model: torch.nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        pairs = [(model(x), y) for x, y, *_ in loader]
    return torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])


def _input_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "`input`" in str(w.message)]


# ---------------------------------------------------------------- item 3: declared input against the data
def test_callback_warns_once_when_logits_are_declared_but_the_model_returns_probabilities(tmp_path: Path) -> None:
    tr, va = shapes_loaders()
    seed_everything(0)
    model = _SoftmaxCNN(width=4)
    cb = CalibrationCallback(input="logits", on_error="raise")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer(tmp_path, [cb], max_epochs=2).fit(model, tr, va)
    found = _input_warnings(record)
    assert len(found) == 1, found  # once per fit, not once per batch or epoch
    message = found[0]
    assert "`input` is 'logits'" in message and "sums to 1" in message and "softmax" in message
    assert "input='probs'" in message  # the fix


def test_callback_with_auto_input_gives_the_true_ece_without_warning(tmp_path: Path) -> None:
    tr, va = shapes_loaders()
    seed_everything(0)
    model = _SoftmaxCNN(width=4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer(tmp_path, [CalibrationCallback(on_error="raise")]).fit(model, tr, va)
    assert not _input_warnings(record)
    probs, labels = _predictions(model, va)
    ref = float(multiclass_calibration_error(probs, labels, 3, n_bins=15))
    metrics = _summary(tmp_path)["metrics"]
    assert metrics["ece"] == pytest.approx(ref, abs=1e-6)
    # the temperature scales the probabilities' logits (log p), it does not take the probabilities for logits
    assert metrics["temperature"] == pytest.approx(fit_temperature(probs.double().log(), labels), rel=1e-4)


def test_callback_validate_warns_again_in_a_new_run(tmp_path: Path) -> None:
    _, va = shapes_loaders()
    seed_everything(0)
    model, cb = _SoftmaxCNN(width=4), CalibrationCallback(input="logits", on_error="raise")
    trainer = _trainer(tmp_path, [cb])
    for _ in range(2):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            trainer.validate(model, va, verbose=False)
        assert len(_input_warnings(record)) == 1


def test_functional_update_warns_once_per_state_on_probabilities_declared_as_logits() -> None:
    probs = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)).softmax(-1)
    target = torch.arange(64) % 5
    state = calibration_state(10, adaptive_sample=0)
    with pytest.warns(UserWarning, match=r"`input` is 'logits'.*sums to 1") as record:
        calibration_update(state, probs, target, "multiclass", "logits")
        calibration_update(state, probs, target, "multiclass", "logits")
    assert len(_input_warnings(record.list)) == 1
    with pytest.warns(UserWarning, match="`input`"):
        expected_calibration_error(probs, target, task="multiclass", input="logits")


def test_functional_update_warns_on_logits_declared_as_probabilities_without_value_checks() -> None:
    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)) * 3
    target = torch.arange(64) % 5
    with pytest.warns(UserWarning, match=r"`input` is 'probs'.*outside \[0, 1\]"):
        calibration_update(calibration_state(10), logits, target, "multiclass", "probs", validate_args=False)
    rows = torch.rand(64, 5, generator=torch.Generator().manual_seed(1))  # in [0, 1], rows do not sum to 1
    with pytest.warns(UserWarning, match=r"`input` is 'probs'.*do not sum to 1"):
        calibration_update(calibration_state(10), rows, target, "multiclass", "probs", validate_args=False)
    with pytest.raises(ValueError, match=r"`input`.*outside \[0, 1\]"):  # checked values: an error, as before
        calibration_update(calibration_state(10), logits, target, "multiclass", "probs")


def test_sync_free_update_looks_at_the_first_batch_only_with_value_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_calibration_common, "_branch_on_values", lambda x: False)  # as on an accelerator
    probs = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)).softmax(-1)
    target = torch.arange(64) % 5
    with pytest.warns(UserWarning, match=r"`input` is 'logits'.*sums to 1"):
        calibration_update(calibration_state(10), probs, target, "multiclass", "logits")
    with warnings.catch_warnings():  # validate_args=False promises no device sync: no look at the values
        warnings.simplefilter("error")
        calibration_update(calibration_state(10), probs, target, "multiclass", "logits", validate_args=False)


def test_no_warning_when_the_data_agree_with_the_declared_input() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g)
    unit = torch.rand(64, 5, generator=g)  # logits that happen to lie in [0, 1] but are no distributions
    target = torch.arange(64) % 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        calibration_update(calibration_state(10), logits, target, "multiclass", "logits")
        calibration_update(calibration_state(10), unit, target, "multiclass", "logits")
        calibration_update(calibration_state(10), logits.softmax(-1), target, "multiclass", "probs")
        calibration_update(calibration_state(10), logits.softmax(-1), target, "multiclass", "auto")
        calibration_update(calibration_state(10), unit[:, 0], target % 2, "binary", "logits")


# ---------------------------------------------------------------- item 4: calibration.json keeps its bins
def test_calibration_json_keeps_per_bin_lists_and_recomputes_torchmetrics(tmp_path: Path) -> None:
    tr, va = shapes_loaders()
    seed_everything(0)
    model = ShapesCNN(width=4)
    n_bins = 15
    _trainer(tmp_path, [CalibrationCallback(n_bins=n_bins, per_class=True, on_error="raise")]).fit(model, tr, va)
    summary = _summary(tmp_path)
    logits, labels = _predictions(model, va)
    probs = logits.softmax(-1)
    for key in ("counts", "accuracy", "confidence"):
        assert isinstance(summary[key], list) and len(summary[key]) == n_bins, key
    assert len(summary["edges"]) == n_bins + 1 and summary["n_bins"] == n_bins
    assert sum(summary["counts"]) == len(labels)
    metrics = summary["metrics"]
    for key in ("ece", "mce", "rmsce", "ace", "brier", "nll", "accuracy", "confidence", "count", "temperature"):
        assert isinstance(metrics[key], (int, float)), key
    assert len(metrics["per_class_ece"]) == 3
    assert metrics["accuracy"] == pytest.approx(float((probs.argmax(-1) == labels).float().mean()), abs=1e-6)
    ece, mce = _errors_from_file(summary)
    assert ece == pytest.approx(float(multiclass_calibration_error(probs, labels, 3, n_bins=n_bins)), abs=1e-6)
    assert mce == pytest.approx(float(multiclass_calibration_error(probs, labels, 3, n_bins=n_bins, norm="max")),
                                abs=1e-6)
    assert metrics["ece"] == pytest.approx(ece, abs=1e-6) and metrics["mce"] == pytest.approx(mce, abs=1e-6)
    empty = [i for i, c in enumerate(summary["counts"]) if c == 0]
    assert empty and all(summary["accuracy"][i] is None and summary["confidence"][i] is None for i in empty)


def _errors_from_file(summary: dict[str, Any]) -> tuple[float, float]:
    """ECE and MCE from the file's bins, scoring the exactly-1.0 part of the last bin on its own as torchmetrics
    does."""
    counts, acc, conf = list(summary["counts"]), list(summary["accuracy"]), list(summary["confidence"])
    one = summary["at_one"]
    if one["count"]:
        rest = counts[-1] - one["count"]
        hits, mass = acc[-1] * counts[-1] - one["accuracy"] * one["count"], conf[-1] * counts[-1] - one["count"]
        counts[-1], acc[-1], conf[-1] = rest, (hits / rest if rest else None), (mass / rest if rest else None)
        counts, acc, conf = counts + [one["count"]], acc + [one["accuracy"]], conf + [1.0]
    total = sum(counts)
    gaps = [abs(a - c) if n else 0.0 for n, a, c in zip(counts, acc, conf)]
    return sum(g * n / total for g, n in zip(gaps, counts)), max(gaps)


def test_calibration_json_with_confidences_of_exactly_one(tmp_path: Path) -> None:
    """torchmetrics scores confidences of exactly 1.0 as a bin of their own: the file says how many there are."""

    class _Sure(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # half the rows one-hot (confidence 1.0)
            flat = x.flatten(1)[:, :3]
            hot = torch.nn.functional.one_hot(flat.argmax(-1), 3).float()
            soft = flat.softmax(-1)
            return torch.where((torch.arange(x.shape[0]) % 2 == 0)[:, None], hot, soft)

    class _Module(ShapesCNN):
        def __init__(self) -> None:
            super().__init__(width=4)
            self.sure = _Sure()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.sure(x)

    _, va = shapes_loaders()
    model = _Module()
    _trainer(tmp_path, [CalibrationCallback(n_bins=5, temperature_scaling=False, gallery_size=0,
                                            on_error="raise")]).validate(model, va, verbose=False)
    (path,) = tmp_path.glob("xai/calibration/validate-epoch=0-step=0*/calibration.json")
    summary = json.loads(path.read_text())
    probs, labels = _predictions(model, va)
    assert summary["at_one"]["count"] == int((probs.max(-1).values == 1.0).sum()) > 0
    ece, mce = _errors_from_file(summary)
    assert ece == pytest.approx(float(multiclass_calibration_error(probs, labels, 3, n_bins=5)), abs=1e-6)
    assert mce == pytest.approx(float(multiclass_calibration_error(probs, labels, 3, n_bins=5, norm="max")),
                                abs=1e-6)


def test_calibration_json_binary_bins(tmp_path: Path) -> None:
    class _Binary(ShapesCNN):
        def __init__(self) -> None:
            super().__init__(num_classes=1, width=4)

        def _step(self, batch: Any, stage: str) -> torch.Tensor:
            x, y = self._split(batch)
            return torch.nn.functional.binary_cross_entropy_with_logits(self(x)[:, 0], (y == 0).float())

    def to_inputs(batch: Any) -> ModelInputs:
        return ModelInputs(args=(batch[0],), labels=(batch[1] == 0).long())

    tr, va = shapes_loaders()
    seed_everything(0)
    model = _Binary()
    _trainer(tmp_path, [CalibrationCallback(n_bins=10, batch_to_inputs=to_inputs, on_error="raise")]).fit(
        model, tr, va)
    summary = _summary(tmp_path)
    logits, labels = _predictions(model, va)
    ref = float(binary_calibration_error(logits[:, 0].sigmoid(), (labels == 0).long(), n_bins=10))
    assert summary["task"] == "binary" and len(summary["counts"]) == 10
    assert _errors_from_file(summary)[0] == pytest.approx(ref, abs=1e-6)
    assert summary["metrics"]["ece"] == pytest.approx(ref, abs=1e-6)


# ---------------------------------------------------------------- item 8: label errors name `labels`
def _labels_as(fn: Any) -> Any:
    def to_inputs(batch: Any) -> ModelInputs:
        return ModelInputs(args=(batch[0],), labels=fn(batch[1]))

    return to_inputs


@pytest.mark.parametrize(("labels", "error", "pattern"), [
    (lambda y: y + 5, ValueError, r"class indices in \[0, 2\].*5"),
    (lambda y: y - 3, ValueError, r"class indices in \[0, 2\].*-3"),
    (lambda y: y.float(), TypeError, r"integer tensor.*torch.float32"),
    (lambda y: y[:, None].expand(-1, 2), ValueError, r"shape \(8,\).*\(8, 2\)"),
], ids=["too large", "negative", "float", "shape"])
def test_callback_label_errors_name_labels_and_batch_to_inputs(tmp_path: Path, labels: Any, error: type,
                                                               pattern: str) -> None:
    _, va = shapes_loaders()
    seed_everything(0)
    cb = CalibrationCallback(batch_to_inputs=_labels_as(labels), on_error="raise")
    with pytest.raises(error, match=pattern) as info:
        _trainer(tmp_path, [cb]).validate(ShapesCNN(width=4), va, verbose=False)
    message = str(info.value)
    assert "`labels`" in message and "batch_to_inputs" in message and "`target`" not in message


def test_functional_label_errors_still_name_target() -> None:
    with pytest.raises(ValueError, match=r"`target`.*class indices in \[0, 2\]"):
        calibration_update(calibration_state(5), torch.zeros(4, 3), torch.tensor([0, 1, 2, 7]), "multiclass")
    assert not math.isnan(float(expected_calibration_error(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))))
