"""A batch explained in parts and joined equals the batch explained whole (the DDP probe split's contract)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers import get_explainer, list_explainers
from lightning_xai.explainers._rows import concat_explanations, row_ranges, take_rows
from lightning_xai.functional import explanation_mode
from tests.helpers import seeded, tiny_attention_model


def _cnn() -> nn.Module:
    with seeded(0):
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _inputs(n: int = 5) -> ModelInputs:
    with seeded(1):
        return ModelInputs((torch.rand(n, 3, 8, 8),), labels=torch.arange(n) % 3)


def test_row_ranges_are_consecutive_even_and_cover_every_row():
    for n in range(1, 12):
        for world in range(1, n + 1):
            ranges = row_ranges(n, world)
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [stop - start for start, stop in ranges]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="cannot split 2 rows into 3"):
        row_ranges(2, 3)


def test_take_rows_slices_every_batch_first_tensor():
    inputs = ModelInputs((torch.arange(10).view(5, 2),), {"attention_mask": torch.ones(5, 3), "scale": torch.tensor(2.0)},
                         labels=torch.arange(5), mask=torch.zeros(5, 4, 4))
    part = take_rows(inputs, 1, 3)
    assert part.args[0].tolist() == [[2, 3], [4, 5]] and part.labels.tolist() == [1, 2]
    assert part.kwargs["attention_mask"].shape == (2, 3) and part.mask.shape == (2, 4, 4)
    assert part.kwargs["scale"].item() == 2.0  # a 0-d tensor is not a batch


SPLITTABLE = ("gradcam", "gradcam++", "layercam", "scorecam", "saliency", "input_x_gradient", "guided_backprop",
              "occlusion", "feature_ablation", "integrated_gradients", "shap", "smoothgrad", "lime", "kernel_shap")


@pytest.mark.parametrize("method", SPLITTABLE)
@pytest.mark.parametrize("target", ["pred", "label"])
def test_parts_joined_equal_the_whole_batch(method, target):
    model, inputs = _cnn(), _inputs()
    kwargs = {"target_layer": "2"} if "cam" in method else {}
    if method == "shap":  # adaptive rounds and random draws, each probe from its own generator
        kwargs = {"n_background": 8, "nsamples": 8, "max_batch": 16}
    if method in ("lime", "kernel_shap"):  # random samples, each probe from its own generator
        kwargs = {"n_samples": 64, "n_segments": 6}
    explainer = get_explainer(method, **kwargs)
    if method == "shap":
        with seeded(2):
            explainer.background = ModelInputs((torch.rand(8, 3, 8, 8),))
    assert explainer.splits_on(torch.device("cpu"))
    with explanation_mode(model):
        whole = explainer.explain(model, inputs, target)
        parts = [explainer.explain(model, take_rows(inputs, a, b), target) for a, b in row_ranges(5, 2)]
    joined = concat_explanations(parts)
    assert type(joined) is type(whole)
    for name in whole.values:
        torch.testing.assert_close(joined.values[name], whole.values[name], atol=1e-5, rtol=1e-4)
    for field in ("target", "prediction", "confidence"):
        torch.testing.assert_close(getattr(joined, field), getattr(whole, field))
    assert joined.inputs["input"].shape == whole.inputs["input"].shape
    assert joined.settings == whole.settings
    if "cam" in method:
        assert joined.flat == whole.flat and joined.layer == whole.layer
    if method == "shap":
        for field in ("nsamples", "converged", "relative_error", "base_values"):
            torch.testing.assert_close(getattr(joined.result, field), getattr(whole.result, field))
        assert int(whole.result.nsamples.max()) > 8  # the adaptive rounds ran (more points than the first round)
    if method == "integrated_gradients":
        torch.testing.assert_close(joined.n_steps_used, whole.n_steps_used)


def test_shap_top_k_parts_join_rank_by_rank():
    model, inputs = _cnn(), _inputs(4)
    explainer = get_explainer("shap", n_background=4, nsamples=8, completeness_tol=None, top_k=2)
    with seeded(2):
        explainer.background = ModelInputs((torch.rand(4, 3, 8, 8),))
    with explanation_mode(model):
        whole = explainer.explain(model, inputs)
        joined = concat_explanations([explainer.explain(model, take_rows(inputs, a, b)) for a, b in row_ranges(4, 2)])
    assert len(joined.ranked) == 2
    for (classes, result), (classes_w, result_w) in zip(joined.ranked, whole.ranked):
        torch.testing.assert_close(classes, classes_w)
        torch.testing.assert_close(result.values[0], result_w.values[0], atol=1e-5, rtol=1e-4)


def test_explainers_whose_maps_depend_on_the_batch_are_not_split():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for method in ("shap", "integrated_gradients"):  # their rounds top chunks up with other probes' rows off the CPU
        assert get_explainer(method).splits_on(cpu) and not get_explainer(method).splits_on(gpu), method
    assert not get_explainer("shap", engine="deep").splits_on(cpu)
    for method in ("randomcam", "deeplift"):
        assert not get_explainer(method).splits_on(cpu), method
    assert get_explainer("integrated_gradients", completeness_tol=None).splits_on(gpu)
    assert not get_explainer("occlusion", baseline=torch.zeros(5, 3, 8, 8)).splits_on(cpu)  # a baseline per probe
    assert not get_explainer("feature_ablation", feature_mask=torch.zeros(1, 1, 8, 8, dtype=torch.long)).splits_on(cpu)
    assert not get_explainer("attention").splits_on(cpu)  # the raw weights of the first probes
    assert get_explainer("attention", max_raw=0).splits_on(cpu)
    for method in ("rollout", "grad_rollout"):
        assert method in list_explainers() and get_explainer(method).splits_on(cpu)


@pytest.mark.parametrize("model_name", ["bert", "vit"])
@pytest.mark.parametrize("method", ["rollout", "grad_rollout"])
def test_attention_parts_joined_equal_the_whole_batch(model_name, method):
    model, batch = tiny_attention_model(model_name)
    inputs = ModelInputs(kwargs=batch)
    explainer = get_explainer(method)
    whole = explainer.explain(model, inputs)
    joined = concat_explanations([explainer.explain(model, take_rows(inputs, i, i + 1)) for i in range(2)])
    torch.testing.assert_close(joined.scores, whole.scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(joined.values[whole.key], whole.values[whole.key], atol=1e-5, rtol=1e-4)
    assert joined.settings == whole.settings and joined.modules == whole.modules


def test_parts_that_disagree_on_a_setting_are_refused():
    model, inputs = _cnn(), _inputs(4)
    with explanation_mode(model):
        a = get_explainer("gradcam", target_layer="0").explain(model, take_rows(inputs, 0, 2))
        b = get_explainer("gradcam", target_layer="2").explain(model, take_rows(inputs, 2, 4))
    with pytest.raises(RuntimeError, match="disagree on 'settings'.*'layer': '0'.*target_layer="):
        concat_explanations([a, b])
