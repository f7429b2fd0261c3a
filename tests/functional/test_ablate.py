"""Occlusion and feature ablation (our batched loop, functional/attribution/_ablate.py) against captum's Occlusion and
FeatureAblation called directly on the same module, inputs and target; the ``feature_mask`` argument."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum import attr
from torch import nn

from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers import get_explainer
from lightning_xai.functional.attribution import ablation_mask, attribute


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


class _Tokens(nn.Module):
    """Embedding, attention-masked mean, MLP: ``forward(input_ids, attention_mask)``; ``head`` is what captum explains."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.emb = nn.Embedding(30, 8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

    def head(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = mask[..., None].float()
        return self.mlp((e * w).sum(1) / w.sum(1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(input_ids), attention_mask)


class _Two(nn.Module):
    """Two floating inputs: an image and a tabular row."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv, self.lin = nn.Conv2d(2, 3, 3), nn.Linear(5, 3)

    def forward(self, image: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(image)).mean((2, 3)) * torch.sigmoid(self.lin(row)) + self.lin(row) ** 2


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-5)


def _tokens_case() -> tuple[_Tokens, torch.Tensor, torch.Tensor, torch.Tensor]:
    net = _Tokens().eval()
    ids = torch.tensor([[1, 5, 7, 2, 9, 0, 0], [3, 3, 9, 11, 4, 6, 8], [2, 4, 6, 8, 10, 12, 0]])
    mask = (torch.arange(7) < torch.tensor([5, 7, 6])[:, None]).long()
    return net, ids, mask, torch.tensor([0, 2, 1])


@pytest.mark.parametrize(("window", "stride"), [((3, 4, 4), (3, 2, 2)), ((1, 3, 5), (1, 2, 3)), ((2, 2, 2), (1, 2, 2))])
def test_occlusion_equals_captum_on_a_cnn(window, stride):
    """Overlapping windows, windows clipped at the edge (16 - 5 is no multiple of 3), every channel or some."""
    net, x, target = _cnn(), torch.rand(3, 3, 16, 16), torch.tensor([0, 2, 1])
    ours = attribute(net, x, target, "occlusion", window=window, stride=stride, baseline=0.3, max_batch=7)
    ref = attr.Occlusion(net).attribute(x, sliding_window_shapes=window, strides=stride, baselines=0.3,
                                        target=target, perturbations_per_eval=5)
    _close(ours.values[0], ref)
    assert torch.allclose(ours.outputs, net(x).gather(1, target[:, None])[:, 0], atol=1e-6)
    assert torch.allclose(ours.base_values, net(torch.full_like(x, 0.3)).gather(1, target[:, None])[:, 0], atol=1e-6)


def test_feature_ablation_equals_captum_on_a_cnn_with_default_and_given_masks():
    net, x, target = _cnn(), torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    base = torch.rand(2, 3, 16, 16)
    patches = torch.arange(16).view(4, 4).repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None]
    ours = attribute(net, x, target, "feature_ablation", baseline=base, patch=(4, 4), max_batch=9)
    ref = attr.FeatureAblation(net).attribute(x, baselines=base, target=target, feature_mask=patches)
    _close(ours.values[0], ref)
    per_probe = torch.stack([torch.randint(0, 5, (3, 16, 16), generator=torch.Generator().manual_seed(b))
                             for b in range(2)])  # per-probe, per-channel ids (probe 1 lacks some ids)
    per_probe[1][per_probe[1] == 3] = 4
    ours = attribute(net, x, target, "feature_ablation", baseline=base, feature_mask=per_probe, max_batch=4)
    ref = attr.FeatureAblation(net).attribute(x, baselines=base, target=target, feature_mask=per_probe)
    _close(ours.values[0], ref)


@pytest.mark.parametrize("method", ["occlusion", "feature_ablation"])
def test_equals_captum_on_a_tabular_mlp(method):
    net, x, target = _mlp(), torch.randn(5, 7), torch.tensor([0, 1, 2, 0, 1])
    if method == "occlusion":
        ours = attribute(net, x, target, method, window=3, stride=2, max_batch=11).values[0]
        ref = attr.Occlusion(net).attribute(x, sliding_window_shapes=(3,), strides=(2,), target=target)
    else:
        mask = torch.tensor([[0, 0, 1, 2, 2, 2, 5]])
        ours = attribute(net, x, target, method, feature_mask=mask, baseline=x.mean(0), max_batch=11).values[0]
        ref = attr.FeatureAblation(net).attribute(x, baselines=x.mean(0, keepdim=True), target=target,
                                                  feature_mask=mask)
    _close(ours, ref)
    scorer = attribute(net, x, lambda out: out[:, 1] - out[:, 0], method, window=3, stride=2) if method == \
        "occlusion" else attribute(net, x, lambda out: out[:, 1] - out[:, 0], method)
    ref = (attr.Occlusion(lambda v: net(v)[:, 1] - net(v)[:, 0]).attribute(x, sliding_window_shapes=(3,), strides=(2,))
           if method == "occlusion" else attr.FeatureAblation(lambda v: net(v)[:, 1] - net(v)[:, 0]).attribute(x))
    _close(scorer.values[0], ref)


@pytest.mark.parametrize("method", ["occlusion", "feature_ablation"])
def test_equals_captum_on_a_token_model_with_padding(method):
    net, ids, mask, target = _tokens_case()
    ours = attribute(net, (ids, mask), target, method, max_batch=5).values[0]
    emb = net.emb(ids).detach()
    if method == "occlusion":
        ref = attr.Occlusion(net.head).attribute(emb, sliding_window_shapes=(1, 8), strides=(1, 8), target=target,
                                                 additional_forward_args=(mask,))
    else:
        ref = attr.FeatureAblation(net.head).attribute(emb, target=target, additional_forward_args=(mask,),
                                                       feature_mask=torch.arange(7).view(1, 7, 1))
    assert ours.shape == ids.shape
    _close(ours, ref.sum(-1))
    assert torch.equal(ours[mask == 0], torch.zeros(int((mask == 0).sum())))  # padding moves nothing: 0


def test_token_feature_mask_groups_words():
    net, ids, mask, target = _tokens_case()
    words = torch.tensor([[0, 0, 1, 1, 2, 3, 3]])  # over the ids (B, L), batch dim 1
    ours = attribute(net, (ids, mask), target, "feature_ablation", feature_mask=words).values[0]
    emb = net.emb(ids).detach()
    ref = attr.FeatureAblation(net.head).attribute(emb, target=target, additional_forward_args=(mask,),
                                                   feature_mask=words[..., None])
    _close(ours, ref.sum(-1))


def test_two_inputs_ids_shared_across_inputs_are_ablated_together():
    net = _Two().eval()
    image, row, target = torch.rand(2, 2, 6, 6), torch.randn(2, 5), torch.tensor([0, 2])
    masks = (torch.arange(4).view(2, 2).repeat_interleave(3, 0).repeat_interleave(3, 1)[None, None],
             torch.tensor([[0, 1, 7, 7, 8]]))  # ids 0 and 1 span both inputs
    ours = attribute(net, (image, row), target, "feature_ablation", feature_mask=masks, max_batch=3)
    ref = attr.FeatureAblation(net).attribute((image, row), target=target, feature_mask=masks)
    for a, b in zip(ours.values, ref):
        _close(a, b)
    ours = attribute(net, (image, row), target, "occlusion", window={0: (2, 3, 3), 1: (2,)},
                     stride={0: (2, 2, 1), 1: (1,)}, max_batch=16)
    ref = attr.Occlusion(net).attribute((image, row), sliding_window_shapes=((2, 3, 3), (2,)),
                                        strides=((2, 2, 1), (1,)), target=target)
    for a, b in zip(ours.values, ref):
        _close(a, b)
    one = attribute(net, (image, row), target, "feature_ablation", feature_mask={1: torch.tensor([0, 0, 1, 1, 2])})
    default = ablation_mask((2, 6, 6), "image") + 3  # the image keeps its default patches, numbered past the ids
    ref = attr.FeatureAblation(net).attribute((image, row), target=target,
                                              feature_mask=(default, torch.tensor([[0, 0, 1, 1, 2]])))
    for a, b in zip(one.values, ref):
        _close(a, b)


def test_feature_mask_errors_name_it():
    net, x, target = _mlp(), torch.randn(2, 7), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="`feature_mask`.*integer"):
        attribute(net, x, target, "feature_ablation", feature_mask=torch.rand(1, 7))
    with pytest.raises(TypeError, match="`feature_mask`.*integer"):
        attribute(net, x, target, "feature_ablation", feature_mask=torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="`feature_mask`.*broadcastable to the input \\(2, 7\\).*\\(1, 6\\)"):
        attribute(net, x, target, "feature_ablation", feature_mask=torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="`feature_mask`.*broadcastable.*\\(3, 7\\)"):
        attribute(net, x, target, "feature_ablation", feature_mask=torch.zeros(3, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="`stride`.*at most the window \\(2,\\).*\\(3,\\)"):
        attribute(net, x, target, "occlusion", window=2, stride=3)  # elements between windows: refused, no NaN
    with pytest.raises(ValueError, match="`feature_mask`.*'feature_ablation'"):
        attribute(net, x, target, "occlusion", feature_mask=torch.zeros(1, 7, dtype=torch.long))
    two = _Two().eval()
    with pytest.raises(ValueError, match="`feature_mask`.*one mask"):
        attribute(two, (torch.rand(2, 2, 6, 6), x[:, :5]), target, "feature_ablation",
                  feature_mask=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="`feature_mask`.*positions \\[0, 1\\]"):
        attribute(two, (torch.rand(2, 2, 6, 6), x[:, :5]), target, "feature_ablation",
                  feature_mask={2: torch.zeros(1, 5, dtype=torch.long)})
    net, ids, mask, target = _tokens_case()
    with pytest.raises(ValueError, match="`feature_mask`.*token ids \\(3, 7\\)"):
        attribute(net, (ids, mask), target, "feature_ablation", feature_mask=torch.zeros(1, 7, 8, dtype=torch.long))


def test_explainer_takes_feature_mask_by_input_name():
    net, ids, mask, target = _tokens_case()
    words = [[0, 0, 1, 1, 2, 3, 3]]  # a nested list, as YAML gives it
    e = get_explainer("feature_ablation", feature_mask={"input_ids": words}).explain(
        net, ModelInputs((), {"input_ids": ids, "attention_mask": mask}), target=target)
    ref = attr.FeatureAblation(net.head).attribute(net.emb(ids).detach(), target=target,
                                                   additional_forward_args=(mask,),
                                                   feature_mask=torch.tensor(words)[..., None])
    _close(e.values["input_ids"], ref.sum(-1))
    assert e.settings["feature_mask"] == {"input_ids": "tensor(1, 7)"}
    with pytest.raises(TypeError, match="`feature_mask\\['input_ids'\\]`.*integer"):
        get_explainer("feature_ablation", feature_mask={"input_ids": [[0.5, 1.0]]})
    with pytest.raises(ValueError, match="`feature_mask`.*input names"):
        get_explainer("feature_ablation", feature_mask={"ids": words}).explain(
            net, ModelInputs((), {"input_ids": ids, "attention_mask": mask}), target=target)
