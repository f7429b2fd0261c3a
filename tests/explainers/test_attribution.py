"""Attribution explainers against captum (same model, inputs, target), completeness, registry, observer hygiene."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from captum import attr
from torch import nn

from lightning_xai.adapters import ModelInputs
from lightning_xai.functional._seeds import row_generators
from lightning_xai.functional.attribution._methods import deterministic_warn_only
from lightning_xai.explainers import get_explainer, list_explainers
from lightning_xai.explainers.attribution import ATTRIBUTION_EXPLAINERS, SmoothGradExplainer

CAPTUM = {"integrated_gradients": {"completeness_tol": None}}  # captum's fixed n_steps (default: to a tolerance)
METHODS = ("saliency", "input_x_gradient", "guided_backprop", "deeplift", "integrated_gradients", "occlusion",
           "feature_ablation")


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


class TokenNet(nn.Module):
    """Embedding, masked mean, linear: ``forward(ids, attention_mask)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.emb = nn.Embedding(20, 6)
        self.head = EmbHead(nn.Linear(6, 3))

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids), attention_mask)


class EmbHead(nn.Module):
    """What captum explains for the token model: the model from its embeddings on."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.lin = lin

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lin((e * mask[..., None].float()).mean(1))


def token_case() -> tuple[nn.Module, ModelInputs, nn.Module, tuple, tuple]:
    net = TokenNet()
    ids = torch.tensor([[1, 5, 7, 2, 0], [3, 3, 9, 11, 4]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    return net, ModelInputs((ids,), {"attention_mask": mask}), net.head, (net.emb(ids).detach(),), (mask,)


def cases() -> dict:
    torch.manual_seed(3)
    image = torch.rand(2, 3, 16, 16)
    rows = torch.randn(3, 5)
    net = cnn()
    out = {"image": (net, ModelInputs((image,)), net, (image,), None)}
    net = mlp()
    out["tabular"] = (net, ModelInputs((rows,)), net, (rows,), None)
    out["tokens"] = token_case()
    return out


def reference(method: str, kind: str, model: nn.Module, xs: tuple, extra: tuple | None, target: torch.Tensor):
    """Captum's own attribution, with the defaults our explainers document for each kind."""
    kw = {"target": target, "additional_forward_args": extra}
    if method == "saliency":
        return attr.Saliency(model).attribute(xs, abs=True, **kw)[0]
    if method == "input_x_gradient":
        return attr.InputXGradient(model).attribute(xs, **kw)[0]
    if method == "guided_backprop":
        return attr.GuidedBackprop(model).attribute(xs, **kw)[0]
    if method == "deeplift":
        return attr.DeepLift(model).attribute(xs, **kw)[0]
    if method == "integrated_gradients":
        return attr.IntegratedGradients(model).attribute(xs, **kw)[0]
    if method == "occlusion":
        window, stride = {"image": ((3, 2, 2), (3, 1, 1)), "tabular": ((1,), (1,)), "tokens": ((1, 6), (1, 6))}[kind]
        return attr.Occlusion(model).attribute(xs, sliding_window_shapes=(window,), strides=(stride,),
                                              perturbations_per_eval=64, **kw)[0]
    mask = {"image": torch.arange(64).view(8, 8).repeat_interleave(2, 0).repeat_interleave(2, 1)[None, None],
            "tabular": None, "tokens": torch.arange(5).view(1, 5, 1)}[kind]
    return attr.FeatureAblation(model).attribute(xs, feature_mask=None if mask is None else (mask,),
                                               perturbations_per_eval=64, **kw)[0]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum's notices on the reference calls
        yield


@pytest.mark.parametrize("kind", ["image", "tabular", "tokens"])
@pytest.mark.parametrize("method", METHODS)
def test_equals_captum(method: str, kind: str) -> None:
    model, inputs, ref_model, xs, extra = cases()[kind]
    e = get_explainer(method, **CAPTUM.get(method, {})).explain(model, inputs, target="pred")
    key = "input"
    with deterministic_warn_only():  # a Trainer(deterministic=True) earlier in the session may have left it on
        expected = reference(method, kind, ref_model, xs, extra, e.target).detach()
    if kind == "tokens":
        expected = expected.sum(-1)
    assert e.values[key].shape == inputs.args[0].shape
    torch.testing.assert_close(e.values[key], expected, atol=1e-5, rtol=1e-5)
    assert e.signed is (method != "saliency")
    if kind == "tokens":
        assert e.tokens[key][0][:2] == ["#1", "#5"] and e.keep[key][0].tolist() == [True] * 4 + [False]
        assert "attention_mask" in e.inputs and "attention_mask" not in e.values


def test_callable_target_and_class_target() -> None:
    model, inputs, _, (x,), _ = cases()["tabular"]
    ig = get_explainer("integrated_gradients", completeness_tol=None)
    by_callable = ig.explain(model, inputs, target=lambda out: out[:, 2])
    by_class = ig.explain(model, inputs, target=2)
    expected = attr.IntegratedGradients(model).attribute(x, target=2)
    torch.testing.assert_close(by_callable.values["input"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(by_class.values["input"], expected, atol=1e-5, rtol=1e-5)
    assert by_callable.target is None and by_class.target.tolist() == [2, 2, 2]


def test_joint_floating_inputs() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(7, 2)

    class Two(nn.Module):
        def forward(self, a, b):
            return lin(torch.tanh(torch.cat([a, b], 1)))

    a, b = torch.randn(2, 3), torch.randn(2, 4)
    e = get_explainer("integrated_gradients", completeness_tol=None).explain(Two(), ModelInputs((a, b)), target=1)
    ref = attr.IntegratedGradients(Two()).attribute((a, b), target=1)
    torch.testing.assert_close(e.values["input_0"], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e.values["input_1"], ref[1], atol=1e-5, rtol=1e-5)
    assert float(e.relative_error.max()) < 1e-3


@pytest.mark.parametrize("base", ["saliency", "integrated_gradients"])
def test_smoothgrad_equals_noise_tunnel_fed_the_same_noise(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, inputs, _, (x,), _ = cases()["image" if base == "saliency" else "tabular"]
    before = torch.get_rng_state()
    e = SmoothGradExplainer(base=base, nt_samples=3, stdevs=0.5, seed=7).explain(model, inputs, target=1)
    assert torch.equal(torch.get_rng_state(), before)
    gens = row_generators(torch.Generator().manual_seed(7), [x])  # each sample's own noise, drawn in turn
    noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in gens for _ in range(3)])  # captum's rows
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise * std)
    method = attr.Saliency(model) if base == "saliency" else attr.IntegratedGradients(model)
    kwargs = {"abs": True} if base == "saliency" else {}
    expected = attr.NoiseTunnel(method).attribute(x, nt_samples=3, stdevs=0.5, target=1, **kwargs)
    torch.testing.assert_close(e.values["input"], expected, atol=1e-5, rtol=1e-5)


def test_smoothgrad_ignores_the_global_rng() -> None:
    model, inputs, *_ = cases()["tabular"]
    torch.manual_seed(0)
    first = get_explainer("smoothgrad").explain(model, inputs).values["input"]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    second = get_explainer("smoothgrad").explain(model, inputs).values["input"]
    assert torch.equal(first, second) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(first, get_explainer("smoothgrad", seed=1).explain(model, inputs).values["input"])


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift"])
def test_completeness(method: str) -> None:
    model, inputs, *_ = cases()["tabular"]
    e = get_explainer(method, **CAPTUM.get(method, {})).explain(model, inputs)
    assert float(e.relative_error.max()) < 1e-3
    gap = e.outputs - e.base_values
    torch.testing.assert_close(e.values["input"].sum(1), gap, atol=1e-3, rtol=1e-3)
    assert get_explainer("saliency").explain(model, inputs).completeness_error is None


def test_deeplift_names_the_layers_it_cannot_handle() -> None:
    net = nn.Sequential(nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match=r"1 \(GELU: gelu\)"), \
            pytest.warns(RuntimeWarning, match="do not add up.*no MaxPool/Softmax layer is in the model"):
        get_explainer("deeplift").explain(net, ModelInputs((torch.randn(2, 5),)))
    with pytest.raises(ValueError, match="`model`"):
        get_explainer("deeplift", strict=True).explain(net, ModelInputs((torch.randn(2, 5),)))


def _pooled_cnn(pool: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), pool,
                         nn.Flatten(), nn.Linear(8, 3)).eval()


def test_deeplift_warns_when_its_values_do_not_add_up_and_names_the_max_pool() -> None:
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match=r"probes .* do not add up.*completeness_tol=0\.05.*4 \(MaxPool2d\).*"
                                            r"integrated_gradients") as record:
        e = get_explainer("deeplift").explain(_pooled_cnn(nn.MaxPool2d(8)), ModelInputs((x,)))
    message = " ".join(str(w.message) for w in record if w.category is RuntimeWarning)
    over = (e.relative_error > 0.05).nonzero().flatten().tolist()
    assert over and f"{len(over)} of 8 probes" in message, (e.relative_error, message)
    assert e.settings["completeness_tol"] == 0.05
    # the same network with an average pool is exact: the max pool's rule was the cause
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        e = get_explainer("deeplift").explain(_pooled_cnn(nn.AvgPool2d(8)), ModelInputs((x,)))
        assert float(e.relative_error.max()) < 1e-3, e.relative_error
        get_explainer("deeplift", completeness_tol=None).explain(_pooled_cnn(nn.MaxPool2d(8)), ModelInputs((x,)))
    with pytest.raises(ValueError, match="`completeness_tol`"):
        get_explainer("deeplift", completeness_tol=0)


def test_deeplift_is_silent_where_it_is_exact_on_a_relu_mlp() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        e = get_explainer("deeplift").explain(net, ModelInputs((torch.randn(8, 5),)))
    assert float(e.relative_error.max()) < 1e-3, e.relative_error  # checked, and well within the tolerance


def test_the_non_elementwise_layers_are_captums_non_rescale_rules() -> None:
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR, nonlinear

    from lightning_xai.explainers._completeness import NON_ELEMENTWISE

    assert set(NON_ELEMENTWISE) == {cls for cls, rule in SUPPORTED_NON_LINEAR.items() if rule is not nonlinear}


@pytest.mark.parametrize("baseline", ["blur", "mean"])
def test_image_baselines(baseline: str) -> None:
    model, inputs, *_ = cases()["image"]
    explainer = get_explainer("integrated_gradients", baseline=baseline, n_steps=8)
    e = explainer.explain(model, inputs)
    assert e.values["input"].shape == (2, 3, 16, 16) and e.base_values.shape == (2,)
    assert explainer.n_background == (32 if baseline == "mean" else 0)


def test_registry_and_argument_errors() -> None:
    assert set(ATTRIBUTION_EXPLAINERS) <= set(list_explainers())
    with pytest.raises(ValueError, match="did you mean"):
        get_explainer("salency")
    with pytest.raises(ValueError, match="`base`"):
        get_explainer("smoothgrad", base="occlusion")
    with pytest.raises(ValueError, match="`baseline`"):
        get_explainer("integrated_gradients", baseline="noise")
    model, inputs, *_ = cases()["image"]
    with pytest.raises(ValueError, match="`baseline`"):
        get_explainer("integrated_gradients", baseline=torch.zeros(2, 3, 8, 8)).explain(model, inputs)
    with pytest.raises(ValueError, match="`window`"):
        get_explainer("occlusion", window=(3, 40, 2)).explain(model, inputs)


def _state(model: nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [sum(len(getattr(m, d)) for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"))
             for m in model.modules()], [sorted(vars(m)) for m in model.modules()],
            torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())


@pytest.mark.parametrize("method", sorted(ATTRIBUTION_EXPLAINERS))
def test_model_left_as_found(method: str) -> None:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3)).train()
    net[0].weight.requires_grad_(False)
    net[4].weight.grad = torch.ones_like(net[4].weight)
    x = torch.randn(4, 5)
    before = _state(net)
    with torch.inference_mode():
        e = get_explainer(method).explain(net, ModelInputs((x,)), target=0)
    after = _state(net)
    assert e.values["input"].shape == (4, 5)
    for b, a in zip(before, after):
        if isinstance(b, torch.Tensor):
            assert torch.equal(a, b)
        elif isinstance(b, list) and b and isinstance(b[0], (torch.Tensor, type(None))):
            assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b))
        else:
            assert np.array_equal(a, b) if isinstance(b, np.ndarray) else a == b


def test_token_baseline_ids_and_dict_by_name() -> None:
    model, inputs, head, (emb,), (mask,) = token_case()
    pad = torch.full_like(inputs.args[0], 4)
    e = get_explainer("integrated_gradients", baseline={"input": pad}, completeness_tol=None).explain(
        model, inputs, target=1)
    expected = attr.IntegratedGradients(head).attribute(emb, baselines=model.emb(pad).detach(), target=1,
                                                        additional_forward_args=(mask,)).sum(-1)
    torch.testing.assert_close(e.values["input"], expected, atol=1e-5, rtol=1e-5)
    assert float(e.relative_error.max()) < 1e-4  # a linear head on the embeddings
    with pytest.raises(ValueError, match="`baseline`"):
        get_explainer("integrated_gradients", baseline=pad[:, :3]).explain(model, inputs)


def test_deeplift_runs_under_deterministic_algorithms_and_restores_the_setting() -> None:
    """Trainer(deterministic=True) leaves torch.use_deterministic_algorithms(True) on; captum's DeepLift unpools the
    max-pooling (max_unpool2d has no deterministic kernel) and used to raise there."""
    from lightning_xai.explainers import get_explainer

    model, x = cnn().eval(), torch.rand(2, 3, 8, 8)
    torch.use_deterministic_algorithms(True)
    try:
        expl = get_explainer("deeplift").explain(model, ModelInputs((x,)), torch.tensor([0, 1]))
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert expl.values["input"].shape == x.shape and torch.isfinite(expl.values["input"]).all()
