"""Linear probes: the probe equals scikit-learn's cross_val_score, pooling, hook capture, auto layers, bad inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

from lightning_xai.functional.probing import (
    capture_activations,
    check_probe_labels,
    control_labels,
    fit_probes,
    linear_probe,
    pool_activations,
    probe_layers,
)
from tests.helpers import TINY_HF, randn, seeded


def _reference(x: torch.Tensor, y: torch.Tensor, cv: int, seed: int, max_iter: int = 1000) -> np.ndarray:
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    return cross_val_score(pipe, x.double().numpy(), y.numpy(), cv=folds)


@pytest.mark.parametrize(("classes", "cv", "seed"), [(2, 5, 0), (3, 3, 7)])
def test_probe_equals_cross_val_score(classes, cv, seed):
    y = torch.arange(90) % classes
    x = randn(90, 6, seed=seed) + 0.8 * F.one_hot(y, 6).float()  # partly decodable: folds differ
    probe = linear_probe(x, y, cv=cv, seed=seed)
    ref = _reference(x, y, cv, seed)
    assert probe.accuracy == pytest.approx(ref.mean(), abs=1e-6)
    assert probe.accuracy_std == pytest.approx(ref.std(), abs=1e-6)
    np.testing.assert_allclose(probe.fold_accuracy, ref, atol=1e-6)
    permuted = y[torch.randperm(90, generator=torch.Generator().manual_seed(seed))]  # the control task
    control = _reference(x, permuted, cv, seed)
    assert probe.control_accuracy == pytest.approx(control.mean(), abs=1e-6)
    assert probe.selectivity == probe.accuracy - probe.control_accuracy
    assert 0.5 < probe.accuracy < 1.0 and probe.n_features == 6 and probe.n_classes == classes


def test_decodable_layer_far_above_chance_untrained_layer_and_control_at_chance():
    y = torch.arange(300) % 3
    with seeded(0):
        net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32))  # untrained
    carrier = randn(300, 16, seed=1) + 3.0 * F.one_hot(y, 16).float()  # the label, linearly
    noise = randn(300, 16, seed=2)  # label-independent inputs
    with torch.no_grad():
        hot = capture_activations(net, ["0", "2"], lambda: net(carrier))
        cold = capture_activations(net, ["0", "2"], lambda: net(noise))
    decoded = fit_probes(hot, y, cv=5)
    chance = fit_probes(cold, y, cv=5)
    for layer in ("0", "2"):
        p, q = decoded.probes[layer], chance.probes[layer]
        assert p.accuracy > 0.9 and p.selectivity > 0.5, (layer, p)
        assert abs(q.accuracy - 1 / 3) < 0.1 and q.chance == pytest.approx(1 / 3), (layer, q)
        assert abs(p.control_accuracy - 1 / 3) < 0.1 and abs(q.control_accuracy - 1 / 3) < 0.1
        assert p.selectivity == p.accuracy - p.control_accuracy


def test_fit_probes_matches_linear_probe_and_skips_after_the_deadline():
    y = torch.arange(40) % 2
    feats = {"a": randn(40, 3, seed=3), "b": randn(40, 3, seed=4) + y[:, None]}
    r = fit_probes(feats, y, cv=4, seed=2)
    one = linear_probe(feats["b"], y, cv=4, seed=2)
    assert r.probes["b"].accuracy == one.accuracy and r.probes["b"].control_accuracy == one.control_accuracy
    late = fit_probes(feats, y, cv=4, deadline=time.monotonic() - 1.0)
    assert late.probes == {} and late.skipped == ("a", "b")
    no_control = fit_probes(feats, y, cv=4, control=False).probes["a"]
    assert not no_control.has_control and no_control.summary()["selectivity"] is None


def test_control_labels_permute_with_the_generator():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    a, b = (control_labels(y, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(a, b) and sorted(a.tolist()) == sorted(y.tolist())
    assert torch.equal(a, y[torch.randperm(6, generator=torch.Generator().manual_seed(5))])


# ------------------------------------------------------------------------------------------------- pooling
def test_pooling_of_tokens_and_maps():
    tokens = randn(2, 5, 4)
    assert torch.equal(pool_activations(tokens, "mean"), tokens.mean(1))
    assert torch.equal(pool_activations(tokens, "max"), tokens.amax(1))
    assert torch.equal(pool_activations(tokens, "cls"), tokens[:, 0])
    assert torch.equal(pool_activations(tokens, "flatten"), tokens.flatten(1))
    maps = randn(2, 3, 4, 4)
    assert torch.allclose(pool_activations(maps, "mean"), maps.mean((2, 3)))
    assert torch.equal(pool_activations(maps, "max"), maps.amax((2, 3)))
    capped = pool_activations(maps, "flatten", max_features=12)  # 3 x 4 x 4 = 48 > 12: the grid shrinks to 2 x 2
    assert torch.allclose(capped, F.adaptive_avg_pool2d(maps, (2, 2)).flatten(1))
    few = pool_activations(maps, "flatten", max_features=2)  # fewer than the channels: 2 of their means
    assert torch.allclose(few, maps.mean((2, 3))[:, [0, 2]])
    channels_last = pool_activations(maps.permute(0, 2, 3, 1), "mean", axis=-1)
    assert torch.allclose(channels_last, maps.mean((2, 3)))
    with pytest.raises(ValueError, match="`pooling`.*'cls'"):
        pool_activations(maps, "cls")
    with pytest.raises(ValueError, match="`pooling`"):
        pool_activations(tokens, "median")  # type: ignore[arg-type]


def test_capture_reads_the_feature_axis_off_the_layer():
    conv1d, norm = nn.Conv1d(3, 6, 3), nn.LayerNorm(6)
    x = randn(2, 3, 10)
    with torch.no_grad():
        got = capture_activations(nn.Sequential(conv1d), ["0"], lambda: conv1d(x))["0"]
        assert torch.allclose(got, conv1d(x).mean(2))  # (B, C, L): channels first
        tokens = randn(2, 6, 6)  # (B, T, D) with T == D: the norm's width says nothing, tokens by default
        got = capture_activations(nn.Sequential(norm), ["0"], lambda: norm(tokens))["0"]
        assert torch.allclose(got, norm(tokens).mean(1))


# ------------------------------------------------------------------------------------------------- capture
class _Tupled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block, self.head = nn.Linear(4, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.block(x))


class _Bad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 3)

    def forward(self, x):
        return {"hidden": self.inner(x)}


def test_capture_accepts_tuples_and_removes_hooks_even_on_error():
    net = _Tupled()
    net.block.register_forward_hook(lambda m, a, out: (out, "extra"))  # a block returning a tuple holding a tensor
    net.head = nn.Identity()
    x = randn(3, 4)
    with torch.no_grad():
        got = capture_activations(net, ["block"], lambda: net(x)[0])
    assert torch.allclose(got["block"], F.linear(x, net.block.weight, net.block.bias))
    assert len(net.block._forward_hooks) == 1  # only the test's own hook is left

    def boom():
        net(x)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        capture_activations(net, ["block"], boom)
    assert len(net.block._forward_hooks) == 1


def test_capture_names_layers_and_the_module():
    net = nn.Sequential(_Bad())
    with pytest.raises(ValueError, match=r"`layers`.*'0'.*_Bad.*returned a dict") as err:
        capture_activations(net, ["0"], lambda: net(randn(2, 4)))
    assert "tensor (or a tuple holding one)" in str(err.value)
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    with pytest.raises(ValueError, match=r"`layers`.*not called"):
        capture_activations(net, ["0.inner"], lambda: None)
    with pytest.raises(ValueError, match=r"Expected argument `layers`.*'nope'.*Candidates"):
        capture_activations(net, ["nope"], lambda: None)


# ------------------------------------------------------------------------------------------------- bad labels
def test_cv_larger_than_the_rarest_class_suggests_a_smaller_cv():
    y = torch.tensor([0] * 10 + [1] * 3)
    with pytest.raises(ValueError, match=r"`cv` to be at most 3.*rarest class \(labels 1\).*`cv=3`"):
        check_probe_labels(y, cv=5)
    with pytest.raises(ValueError, match=r"`cv` to be at most 3"):
        linear_probe(randn(13, 2), y, cv=5)
    with pytest.raises(ValueError, match="at least two classes"):
        check_probe_labels(torch.zeros(8, dtype=torch.long), cv=2)
    with pytest.raises(ValueError, match="integer class labels"):
        check_probe_labels(torch.rand(8), cv=2)
    with pytest.raises(ValueError, match="finite"):
        linear_probe(torch.full((8, 2), float("nan")), torch.arange(8) % 2, cv=2)


# ------------------------------------------------------------------------------------------------- auto
def test_auto_layers_one_per_block():
    import torchvision
    from torchvision.models.convnext import CNBlockConfig
    from transformers import BertConfig, BertForSequenceClassification

    assert probe_layers(torchvision.models.resnet18()) == ["layer1", "layer2", "layer3", "layer4"]
    convnext = torchvision.models.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 2)])
    assert probe_layers(convnext) == ["features.1", "features.3"]
    vit = torchvision.models.VisionTransformer(32, 16, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=8)
    assert probe_layers(vit) == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]
    bert = BertForSequenceClassification(BertConfig(vocab_size=50, **TINY_HF))
    assert probe_layers(bert) == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    with pytest.raises(ValueError, match=r"`layers`.*'auto'.*Sequential has neither"):
        probe_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_token_pooling_leaves_padding_out_with_the_attention_mask():
    """The same sentence padded to two lengths pools to the same row with the mask (mean and max), not without."""
    emb = torch.nn.Embedding(20, 4, padding_idx=0)
    short = torch.tensor([[5, 6, 7, 0]])
    long = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])
    for pooling in ("mean", "max"):
        a = pool_activations(emb(short), pooling, mask=(short != 0).long())
        b = pool_activations(emb(long), pooling, mask=(long != 0).long())
        assert torch.allclose(a, b), pooling
        assert torch.allclose(a, pool_activations(emb(short[:, :3]), pooling)), pooling
    assert not torch.allclose(pool_activations(emb(short), "mean"), pool_activations(emb(long), "mean"))
    net = torch.nn.Sequential(torch.nn.Embedding(20, 4, padding_idx=0), torch.nn.Linear(4, 3))
    got = capture_activations(net, ["0"], lambda: net(long), mask=(long != 0).long())
    assert torch.allclose(got["0"], pool_activations(net[0](short[:, :3]), "mean"))
