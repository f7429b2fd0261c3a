"""AttributionCallback: several registered explainers on one probe, their artifacts, agreement and stability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader

from lightning_xai import AttributionCallback
from lightning_xai._inputs import Scorer, input_kind, input_names
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.demo import ShapesCNN
from lightning_xai.explainers import Explainer, Explanation, register_explainer, unregister_explainer
from lightning_xai.explainers._base import targets_of
from lightning_xai.sinks.files import read_manifest
from tests.helpers import read_events, tiny_trainer


class _Gradient(Explainer):
    """input x gradient (sign flipped with ``flip``); with ``noise`` > 0 a seeded noisy version (stochastic)."""

    name = "toy_ixg"
    flip = 1.0

    def __init__(self, seed: int = 0, noise: float = 0.0) -> None:
        self.seed, self.noise = seed, noise
        self.stochastic = noise > 0

    def explain(self, model, inputs, target="pred", scorer=None):
        scorer = scorer or Scorer()
        x = inputs.args[0].detach().clone().requires_grad_(True)
        logits = scorer.logits(scorer(model, inputs.replace(0, x)))
        classes = targets_of(logits.detach(), target, inputs)
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), x)
        values = self.flip * (x * grad).detach().cpu()
        if self.noise:
            gen = torch.Generator().manual_seed(self.seed)
            values = values + self.noise * values.abs().max() * torch.randn(values.shape, generator=gen)
        name = input_names(inputs)[0]
        return Explanation(method=self.name, values={name: values}, inputs={name: x.detach().cpu()},
                           kinds={name: input_kind(name, x)}, target=classes.cpu(),
                           prediction=logits.argmax(-1).cpu(), confidence=logits.softmax(-1).amax(-1).detach().cpu())


class _Flipped(_Gradient):
    name = "toy_neg_ixg"
    flip = -1.0


@pytest.fixture
def toys():
    register_explainer("toy_ixg", _Gradient)
    register_explainer("toy_neg_ixg", _Flipped)
    yield
    unregister_explainer("toy_ixg")
    unregister_explainer("toy_neg_ixg")


def _fit(tmp_path, cb):
    seed_everything(0)
    train = DataLoader(SyntheticShapes(32, image_size=16, seed=1), batch_size=8)
    val = DataLoader(SyntheticShapes(16, image_size=16, seed=2), batch_size=8)
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=1)
    trainer.fit(ShapesCNN(width=4), train, val)
    return trainer


def test_every_method_gets_its_artifacts_and_the_comparison_its_agreement(tmp_path, toys):
    cb = AttributionCallback(methods=("toy_ixg", "toy_neg_ixg", "gradcam"), num_samples=4, on_error="raise")
    trainer = _fit(tmp_path, cb)
    records = list(read_manifest(next(tmp_path.rglob("manifest.jsonl"))))
    assert [r["method"] for r in records] == ["toy_ixg", "toy_neg_ixg", "gradcam", "comparison"]
    folder = next(tmp_path.rglob("attribution_toy_ixg.npz")).parent
    ixg, neg = np.load(folder / "attribution_toy_ixg.npz"), np.load(folder / "attribution_toy_neg_ixg.npz")
    assert ixg["input"].shape == (4, 3, 16, 16) and np.array_equal(neg["input"], -ixg["input"])
    assert ixg["targets"].shape == ixg["predictions"].shape == (4,)
    assert np.load(folder / "attribution_gradcam.npz")["input"].shape == (4, 16, 16)
    # a method and its mirror image rank every pixel alike (|attribution|): agreement 1
    assert float(trainer.callback_metrics["xai/attribution/agreement/toy_ixg_vs_toy_neg_ixg"]) == pytest.approx(1.0)
    assert -1 <= float(trainer.callback_metrics["xai/attribution/agreement/toy_ixg_vs_gradcam"]) < 1
    events = read_events(tmp_path)
    assert {"xai/attribution/comparison", "xai/attribution/toy_ixg/input", "xai/attribution/gradcam/input"} <= set(
        events["images"])


def test_a_stochastic_method_logs_its_stability_between_two_seeds(tmp_path, toys):
    cb = AttributionCallback(methods=("toy_ixg",), method_kwargs={"toy_ixg": {"noise": 0.5}}, num_samples=4,
                             on_error="raise")
    trainer = _fit(tmp_path, cb)
    iou = float(trainer.callback_metrics["xai/attribution/toy_ixg/stability_iou"])
    assert 0.0 <= iou < 1.0  # noise of half the largest value moves the top 10%
    quiet = AttributionCallback(methods=("toy_ixg",), method_kwargs={"toy_ixg": {"noise": 1e-9}}, num_samples=4,
                                on_error="raise")
    assert float(_fit(tmp_path / "quiet", quiet).callback_metrics[
        "xai/attribution/toy_ixg/stability_iou"]) == pytest.approx(1.0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"methods": ("no_such_method",)}, r"`methods`.*registered explainers.*'shap'"),
    ({"methods": ("shap", "shap")}, "distinct"),
    ({"methods": "shap"}, "`methods`"),
    ({"methods": ("shap",), "method_kwargs": {"gradcam": {}}}, "`method_kwargs`"),
    ({"methods": ("gradcam",), "method_kwargs": {"gradcam": {"nsamples": 3}}}, "`method_kwargs`.*gradcam"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttributionCallback(**kwargs)


def test_shared_arguments_reach_the_methods_that_take_them():
    cb = AttributionCallback(methods=("gradcam", "shap"), embedding_layer="emb", seed=7)
    assert cb.explainers["shap"].embedding_layer == "emb" and cb.explainers["shap"].seed == 7
    assert not hasattr(cb.explainers["gradcam"], "embedding_layer")



class _Zero(_Gradient):
    """A stochastic method whose maps are all zero (e.g. LIME's Lasso keeping no superpixel)."""

    name = "toy_zero"
    flip = 0.0


def test_stability_of_flat_maps_is_undefined_not_perfect(tmp_path):
    """Two all-zero maps share no top 10%: the IoU is NaN (a flat map is not stable, it shows nothing), not 1; the
    flat maps are named in a warning and counted in ``<method>/flat``."""
    register_explainer("toy_zero", _Zero)
    try:
        cb = AttributionCallback(methods=("toy_zero",), method_kwargs={"toy_zero": {"noise": 1e-9}}, num_samples=4,
                                 on_error="raise")
        cb.explainers["toy_zero"].noise = 0.0  # exactly zero maps, still run twice (stochastic)
        cb.explainers["toy_zero"].stochastic = True
        with pytest.warns(RuntimeWarning, match=r"toy_zero gave a flat map \(every value equal\) for probes \[0, 1, 2, 3\]"):
            metrics = _fit(tmp_path, cb).callback_metrics
    finally:
        unregister_explainer("toy_zero")
    assert float(metrics["xai/attribution/toy_zero/stability_iou"]) != float(metrics[
        "xai/attribution/toy_zero/stability_iou"])
    assert float(metrics["xai/attribution/toy_zero/flat"]) == 1.0


def test_integrated_gradients_that_do_not_converge_are_named(tmp_path):
    cb = AttributionCallback(methods=("integrated_gradients",), num_samples=4, on_error="raise",
                             method_kwargs={"integrated_gradients": {"completeness_tol": 1e-9, "max_steps": 8}})
    with pytest.warns(RuntimeWarning, match=r"integrated_gradients did not reach completeness_tol=1e-09 for probes"):
        trainer = _fit(tmp_path, cb)
    assert float(trainer.callback_metrics["xai/attribution/integrated_gradients/converged"]) < 1.0
    assert float(trainer.callback_metrics["xai/attribution/integrated_gradients/completeness/relative_median"]) > 0
