"""Ring (c): callbacks are observers. Flags, requires_grad, .grad, hooks, RNG and the trained weights are untouched."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from torch import nn

from lightning_xai import (
    AttributionCallback,
    AttributionDriftCallback,
    CalibrationCallback,
    GradCAMCallback,
    SHAPCallback,
)
from lightning_xai.adapters import ModelInputs
from lightning_xai.demo import ShapesCNN
from lightning_xai.functional import explanation_mode, observer_guard
from tests.helpers import tiny_trainer


def _snapshot(model: nn.Module) -> dict:
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "torch_rng": torch.get_rng_state(),
        "np_rng": np.random.get_state()[1].copy(),
        "py_rng": random.getstate(),
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["grad_ids"] == b["grad_ids"]
    for ga, gb in zip(a["grad"], b["grad"]):
        assert (ga is None and gb is None) or torch.equal(ga, gb)
    assert a["hooks"] == b["hooks"]
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert np.array_equal(a["np_rng"], b["np_rng"])
    assert a["py_rng"] == b["py_rng"]


def _odd_model() -> ShapesCNN:
    model = ShapesCNN()
    model.train()
    model.features[1].eval()  # a mixed train/eval state must survive
    model.features[0].weight.requires_grad_(False)
    model.head.weight.grad = torch.ones_like(model.head.weight)
    model.head.register_forward_hook(lambda *a: None)
    return model


@pytest.mark.parametrize("methods", [("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"), ("scorecam",),
                                     ("eigencam", "ablationcam")])
def test_explanation_leaves_model_and_rng_untouched(methods, tmp_path):
    model = _odd_model()
    cb = GradCAMCallback(num_samples=2, methods=methods, on_error="raise")
    inputs = ModelInputs(args=(torch.randn(2, 3, 32, 32),), labels=torch.tensor([0, 1]))
    before = _snapshot(model)
    with torch.inference_mode(), explanation_mode(model):
        result = cb._explain(model, inputs)
    _assert_same(before, _snapshot(model))
    assert all(torch.isfinite(e.values[e.key]).all() for e in result["explanations"].values())


def test_guard_restores_after_an_exception():
    model = _odd_model()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), observer_guard(model):
        model.eval()
        model.features.register_forward_hook(lambda *a: None)
        model.head.weight.requires_grad_(False)
        model.head.weight.grad.zero_()
        model.features[4].weight.grad = torch.zeros_like(model.features[4].weight)
        torch.rand(3), np.random.rand(), random.random()
        raise RuntimeError("boom")
    _assert_same(before, _snapshot(model))


def _fit(tmp_path, callbacks) -> dict:
    from lightning_xai.datasets import SyntheticShapesDataModule

    seed_everything(7)
    model = ShapesCNN()
    model.head = nn.Sequential(nn.Dropout(0.3), model.head)  # dropout: RNG use during training matters
    dm = SyntheticShapesDataModule(batch_size=8, num_train=48, num_val=16, image_size=32)
    tiny_trainer(tmp_path, callbacks, max_epochs=3, limit_train_batches=3, limit_val_batches=2).fit(model, dm)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fit_with_callbacks_ends_with_bit_identical_weights(tmp_path):
    without = _fit(tmp_path / "a", [])
    callbacks = [
        GradCAMCallback(num_samples=4, methods=("gradcam", "gradcam++", "scorecam"), on_error="raise"),
        GradCAMCallback(num_samples=3, methods=("layercam",), target="label", on_error="raise",
                        faithfulness=True, faithfulness_steps=5),
        CalibrationCallback(n_bins=10, per_class=True, source="forward", on_error="raise"),
        SHAPCallback(num_samples=2, n_background=4, nsamples=8, max_nsamples=16, on_error="raise"),
        SHAPCallback(num_samples=2, n_background=4, nsamples=8, max_nsamples=16, on_error="raise", overlap=True,
                     name="shap_alongside"),  # explained on a copy in a thread while the next epoch trains
        AttributionDriftCallback(num_samples=3, store=str(tmp_path / "store.sqlite"), on_error="raise"),
        AttributionDriftCallback(method="shap", num_samples=2, store=str(tmp_path / "store.sqlite"), run="shap",
                                 method_kwargs={"n_background": 4, "nsamples": 8, "max_nsamples": 16},
                                 on_error="raise"),
        AttributionCallback(num_samples=2, methods=("gradcam", "shap"), on_error="raise",
                            method_kwargs={"shap": {"n_background": 4, "nsamples": 8, "max_nsamples": 16}}),
    ]
    with_cbs = _fit(tmp_path / "b", callbacks)
    assert without.keys() == with_cbs.keys()
    for k in without:
        assert torch.equal(without[k], with_cbs[k]), k


def test_guard_resets_transformers_hook_flags():
    """transformers installs its output_attentions hooks on the first forward that asks for them and marks the model
    `_output_capturing_hooks_installed`; the guard removes the hooks, so it must reset the mark too (else later
    `output_attentions=True` calls return no attentions)."""
    transformers = pytest.importorskip("transformers")
    from tests.helpers import TINY_HF

    model = transformers.BertForSequenceClassification(transformers.BertConfig(vocab_size=30, **TINY_HF)).eval()
    model.set_attn_implementation("eager")
    ids = torch.randint(1, 30, (2, 6))
    with observer_guard(model):
        assert len(model(input_ids=ids, output_attentions=True).attentions) == 2
    assert len(model(input_ids=ids, output_attentions=True).attentions) == 2
