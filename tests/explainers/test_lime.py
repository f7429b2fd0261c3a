"""LIME and Kernel SHAP explainers: captum's Lime / KernelShap on the same features and samples, exact on linear
models, the global RNG untouched, stability between seeds, every input kind, errors, registry."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers import explainer_arguments, get_explainer, list_explainers
from lightning_xai.functional.attribution import kernel_shap, lime, superpixels
from lightning_xai.functional._seeds import row_generators
from lightning_xai.functional.attribution._surrogate import lime_samples, shap_samples


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, 3)).eval()


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(2, 3, 16, 16)
    x[:, 0, :8] = 1.0
    x[:, 1, :, 8:] = 0.8
    return x + 0.05 * torch.rand(x.shape, generator=g)


class _Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 6, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))

    def pooled(self, e: torch.Tensor) -> torch.Tensor:
        return self.head(e.mean(1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.pooled(self.emb(ids))


def _captum(method: str, forward, x, baseline, mask, rows: torch.Tensor, target: int) -> torch.Tensor:
    """captum's Lime / KernelShap (default models and kernels) fed ``rows`` as its samples."""
    from captum.attr import KernelShap, Lime

    def given(*_, **__):
        yield from (r.view(1, -1).long() for r in rows)

    explainer = Lime(forward, perturb_func=given) if method == "lime" else KernelShap(forward)
    explainer.perturb_func = given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return explainer.attribute(x, baselines=baseline, target=target, feature_mask=mask,
                                   n_samples=rows.shape[0], perturbations_per_eval=16)


def _ours(method: str, model, x, target, n: int, **kw):
    fn = lime if method == "lime" else kernel_shap
    return fn(model, x, target, n_samples=n, generator=torch.Generator().manual_seed(3), **kw)


def _samples(method: str, counts: torch.Tensor, n: int, explained: torch.Tensor) -> torch.Tensor:
    """Our samples: each probe's from its own generator, seeded from generator 3 and the probe's values."""
    gens = row_generators(torch.Generator().manual_seed(3), [explained])
    return (lime_samples if method == "lime" else shap_samples)(counts, n, gens)


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_equals_captum_on_superpixels(method):
    pytest.importorskip("sklearn")
    model, x, n = _cnn(), _image(), 200
    target = torch.tensor([0, 2])
    ours = _ours(method, model, x, target, n, n_segments=12).values[0]
    segments = superpixels(x, 12)
    z = _samples(method, segments.flatten(1).amax(1) + 1, n, x)
    for b in range(2):
        mask = segments[b].view(1, 1, 16, 16).expand(1, 3, 16, 16)
        ref = _captum(method, model, x[b:b + 1], 0.0, mask, z[b, :, :int(mask.max()) + 1], int(target[b]))
        scale = float(ref.abs().max())
        assert torch.allclose(ours[b:b + 1], ref, atol=2e-3 * scale), float((ours[b:b + 1] - ref).abs().max())


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_equals_captum_on_tabular_and_tokens(method):
    pytest.importorskip("sklearn")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    x = torch.randn(1, 6)
    ours = _ours(method, mlp, x, torch.tensor([1]), 80).values[0]
    ref = _captum(method, mlp, x, 0.0, torch.arange(6).view(1, 6), _samples(method, torch.tensor([6]), 80, x)[0], 1)
    assert torch.allclose(ours, ref, atol=2e-3 * float(ref.abs().max()))

    net, ids = _Tokens().eval(), torch.tensor([[3, 5, 7, 9, 11]])
    ours = _ours(method, net, ids, torch.tensor([0]), 60, mask_token_id=2).values[0]
    emb = net.emb(ids).detach()
    base = net.emb(torch.full_like(ids, 2)).detach()
    ref = _captum(method, net.pooled, emb, base, torch.arange(5).view(1, 5, 1).expand(1, 5, 6),
                  _samples(method, torch.tensor([5]), 60, emb)[0], 0)[..., 0]
    assert ours.shape == ids.shape
    assert torch.allclose(ours, ref, atol=2e-3 * float(ref.abs().max()))


def test_linear_models_are_recovered_exactly():
    """f = w.x + c: with features S_f, the coefficients are sum_{i in f} w_i (x_i - baseline_i)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    x, target = _image(), torch.tensor([1, 0])
    segments = superpixels(x, 10)
    contrib = (net[1].weight.detach()[target].view(2, 3, 16, 16) * (x - 0.25)).sum(1)  # baseline 0.25
    truth = torch.zeros_like(contrib)
    for b in range(2):
        per = torch.zeros(int(segments[b].max()) + 1).index_add_(0, segments[b].flatten(), contrib[b].flatten())
        truth[b] = per[segments[b]]
    for result in (kernel_shap(net, x, target, n_samples=120, n_segments=10, baseline=0.25),
                   lime(net, x, target, n_samples=120, n_segments=10, baseline=0.25, alpha=0.0)):
        assert torch.allclose(result.values[0][:, 0], truth, atol=1e-4)
        assert torch.allclose(result.values[0][:, 0], result.values[0][:, 2])  # every channel carries it
    shap = kernel_shap(net, x, target, n_samples=120, n_segments=10, baseline=0.25)
    assert float(shap.completeness_error.max()) < 1e-3


def test_global_rng_untouched_and_seeds():
    model, x = _cnn(), _image()[:1]
    with torch.no_grad():
        model[-1].weight.mul_(50)  # scores that move by more than the Lasso's alpha
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    maps = [get_explainer("lime", n_samples=300, seed=s).explain(model, ModelInputs((x,))).maps()["input"]
            for s in (0, 1)]
    again = get_explainer("lime", n_samples=300, seed=0).explain(model, ModelInputs((x,))).maps()["input"]
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    assert torch.equal(maps[0], again) and not torch.equal(maps[0], maps[1])
    k = maps[0].numel() // 10
    top = [set(m.flatten().topk(k).indices.tolist()) for m in maps]
    assert len(top[0] & top[1]) / len(top[0] | top[1]) >= 0.5


def test_every_kind_shapes_padding_and_explanation():
    torch.manual_seed(0)
    spec = nn.Sequential(nn.Flatten(), nn.Linear(16 * 24, 2))
    video = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 8 * 8, 2))
    for model, x in ((spec, torch.rand(2, 16, 24)), (video, torch.rand(1, 3, 4, 8, 8))):
        e = get_explainer("kernel_shap", n_samples=40).explain(model, ModelInputs((x,)))
        assert e.values["input"].shape == x.shape and e.base_values.shape == (x.shape[0],)
    ids = torch.tensor([[4, 6, 8, 0, 0], [5, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    net = _Tokens().eval()
    for name in ("lime", "kernel_shap"):
        e = get_explainer(name, n_samples=30).explain(net, ModelInputs((ids[:1],)))
        assert e.values["input"].shape == (1, 5) and e.signed
        assert (e.values["input"][0, 3:] == 0).all()  # padding: not a feature
        assert name == "lime" or (e.values["input"][0, :3] != 0).all()
        assert e.settings["method"] == name and e.settings["n_samples"] == 30 and e.settings["seed"] == 0
    with pytest.raises(ValueError, match=r"input 'input' \(tokens\): 1 non-padding token"):
        get_explainer("lime").explain(net, ModelInputs((ids,)))


def test_errors_and_registry():
    with pytest.raises(ValueError, match=r"input 'input' \(tabular\): 1 element"):
        get_explainer("kernel_shap").explain(nn.Linear(1, 2), ModelInputs((torch.rand(2, 1),)))
    with pytest.raises(ValueError, match=r"superpixel with n_segments=1"):
        get_explainer("lime", n_segments=1).explain(_cnn(), ModelInputs((_image(),)))
    with pytest.raises(TypeError, match="n_segmentz"):
        get_explainer("lime", n_segmentz=4)
    with pytest.raises(ValueError, match="kernel_width"):
        get_explainer("lime", kernel_width=0)
    assert {"lime", "kernel_shap"} <= set(list_explainers())
    assert {"n_segments", "alpha", "seed", "max_batch"} <= set(explainer_arguments("lime"))
    assert get_explainer("kernel_shap").stochastic


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_fewer_samples_than_features_is_said(method):
    """A surrogate fitted to fewer samples than features is not determined by them: a warning with the fix."""
    from lightning_xai.functional.attribution import kernel_shap, lime

    run = lime if method == "lime" else kernel_shap
    net, x = nn.Linear(40, 2), torch.rand(2, 40)
    with pytest.warns(RuntimeWarning, match=rf"{method} has 40 features for a probe but n_samples=25: the surrogate "
                                            r"is under-determined.*at least 82"):
        run(net, x, torch.tensor([0, 1]), n_samples=25)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run(net, x, torch.tensor([0, 1]), n_samples=100)


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
def test_feature_mask_equals_captum_on_tabular_and_tokens(method):
    """``feature_mask=`` (captum's): any integer ids, numbered per probe in order; tokens grouped into words."""
    pytest.importorskip("sklearn")
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    x = torch.randn(1, 6)
    ours = _ours(method, mlp, x, torch.tensor([1]), 80, feature_mask=torch.tensor([[5, 5, 9, -1, 9, -1]])).values[0]
    ref = _captum(method, mlp, x, 0.0, torch.tensor([[1, 1, 2, 0, 2, 0]]), _samples(method, torch.tensor([3]), 80, x)[0],
                  1)
    assert torch.allclose(ours, ref, atol=2e-3 * float(ref.abs().max()))

    net, ids = _Tokens().eval(), torch.tensor([[3, 5, 7, 9, 11]])
    words = torch.tensor([0, 0, 1, 2, 2])  # over the ids, no batch dim
    ours = _ours(method, net, ids, torch.tensor([0]), 60, mask_token_id=2, feature_mask=words).values[0]
    emb, base = net.emb(ids).detach(), net.emb(torch.full_like(ids, 2)).detach()
    ref = _captum(method, net.pooled, emb, base, words.view(1, 5, 1).expand(1, 5, 6),
                  _samples(method, torch.tensor([3]), 60, emb)[0], 0)[..., 0]
    assert torch.allclose(ours, ref, atol=2e-3 * float(ref.abs().max()))


def test_feature_mask_errors_name_it():
    net, x = nn.Linear(4, 2), torch.rand(2, 4)
    with pytest.raises(ValueError, match=r"`feature_mask`.*at least 2 distinct ids.*lime.*sample 1 with 1 feature"):
        lime(net, x, torch.tensor([0, 1]), feature_mask=torch.tensor([[0, 1, 1, 1], [3, 3, 3, 3]]))
    with pytest.raises(TypeError, match="`feature_mask`.*integer"):
        kernel_shap(net, x, torch.tensor([0, 1]), feature_mask=torch.tensor([[0.0, 1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"`feature_mask`.*broadcastable to the input \(2, 4\)"):
        kernel_shap(net, x, torch.tensor([0, 1]), feature_mask=torch.tensor([[0, 1, 1]]))
    with pytest.raises(TypeError, match="`feature_mask`.*integer"):
        get_explainer("lime", feature_mask=[[0.5, 1.0]])
    e = get_explainer("kernel_shap", n_samples=32, feature_mask=[[0, 0, 1, 1]]).explain(net, ModelInputs((x,)))
    v = e.values["input"]
    assert torch.equal(v[:, 0], v[:, 1]) and torch.equal(v[:, 2], v[:, 3]) and not torch.equal(v[:, 0], v[:, 2])
