"""shap's Deep, Kernel and Partition explainers on the library's input contract: closed forms, brute force,
tokens, layers DeepExplainer cannot handle, limits, hygiene."""

from __future__ import annotations

import itertools
import math
import random
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_xai.functional.shap import ShapResult, expected_gradients
from lightning_xai.functional.shap._masking import consecutive_clustering
from lightning_xai.functional.shap._peers import shap_deep, shap_kernel, shap_partition
from tests.helpers import randn, seeded

torch.set_num_threads(1)

ENGINES: dict[str, Callable[..., ShapResult]] = {
    "deep": shap_deep,
    "kernel": shap_kernel,
    "partition": shap_partition,
}


def smooth_mlp(features: int = 5) -> nn.Sequential:
    with seeded(1):
        return nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def relu_mlp() -> nn.Sequential:
    with seeded(2):
        return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)).eval()


class TokenModel(nn.Module):
    """Embedding -> masked mean over tokens -> Linear; token 7 decides class 1 (weights set by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 4, padding_idx=0)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.emb.weight.copy_(0.1 * randn(20, 4, seed=3))
            self.emb.weight[7] = torch.tensor([4.0, 0.0, 0.0, 0.0])
            self.emb.weight[0] = 0.0
            self.head.weight.copy_(torch.tensor([[-1.0, 0.2, 0.0, 0.1], [1.0, 0.0, 0.3, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.05, -0.05]))

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        pooled = (self.emb(ids) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return self.head(pooled)


def keyword_batch() -> tuple[Tensor, Tensor, Tensor]:
    """Token ids with the keyword at a known position, some rows right-padded (id 0, mask 0)."""
    gen = torch.Generator().manual_seed(12)
    ids = torch.randint(1, 7, (6, 8), generator=gen)
    position = torch.tensor([0, 2, 5, 1, 3, 4])
    ids[torch.arange(6), position] = 7
    mask = torch.ones_like(ids)
    for row, length in ((1, 6), (4, 5), (5, 7)):
        ids[row, length:], mask[row, length:] = 0, 0
    return ids, mask, position


def brute_force_values(
    f: Callable[[Tensor], Tensor], x: Tensor, bg: Tensor, orders: list[tuple[int, ...]]
) -> Tensor:
    """Mean marginal contribution of each feature over the given orders; a missing feature takes each
    background row's value (interventional)."""
    m = x.shape[0]
    phi = torch.zeros(m, dtype=torch.float64)
    for order in orders:
        present = torch.zeros(m, dtype=torch.bool)
        before = f(bg).double().mean()
        for i in order:
            present[i] = True
            after = f(torch.where(present, x, bg)).double().mean()
            phi[i] += after - before
            before = after
    return phi / len(orders)


def hierarchy_orders(m: int) -> list[tuple[int, ...]]:
    """The orders in which every cluster of :func:`consecutive_clustering` is contiguous (Owen values)."""
    members = [{i} for i in range(m)]
    for left, right, _, _ in consecutive_clustering(m):
        members.append(members[int(left)] | members[int(right)])
    clusters = [c for c in members[m:]]

    def contiguous(order: tuple[int, ...]) -> bool:
        where = {f: k for k, f in enumerate(order)}
        return all(max(where[f] for f in c) - min(where[f] for f in c) == len(c) - 1 for c in clusters)

    return [order for order in itertools.permutations(range(m)) if contiguous(order)]


# ------------------------------------------------------------------------------------------- ground truth
@pytest.mark.parametrize("engine", ["deep", "kernel", "partition", "partition-correlation"])
def test_linear_model_matches_closed_form(engine: str) -> None:
    model = nn.Linear(6, 3)
    with torch.no_grad():
        model.weight.copy_(randn(3, 6, seed=8))
        model.bias.copy_(randn(3, seed=9))
    x, background = randn(5, 6, seed=10), randn(20, 6, seed=11)
    target = torch.tensor([0, 1, 2, 1, 0])
    if engine == "partition-correlation":
        result = shap_partition(model, x, background, target, clustering="correlation")
    else:
        result = ENGINES[engine](model, x, background, target)
    exact = (model.weight[target] * (x - background.mean(0))).detach()
    assert torch.allclose(result.values[0], exact, atol=1e-4)
    with torch.no_grad():
        scores = model(x).gather(1, target[:, None]).squeeze(1)
        base = model(background).mean(0)[target]
    assert torch.allclose(result.outputs, scores, atol=1e-5)
    assert torch.allclose(result.base_values, base, atol=1e-5)
    assert result.relative_error.max() < 1e-4 and result.converged is None and result.explained == (True,)


def test_deep_is_exactly_additive_on_a_relu_mlp() -> None:
    model, x, background = relu_mlp(), randn(4, 10, seed=13), randn(16, 10, seed=14)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every layer is one shap handles: no warning
        result = shap_deep(model, x, background, torch.tensor([0, 1, 2, 0]))
    assert result.relative_error.max() < 1e-3 and result.nsamples.tolist() == [16] * 4
    chunked = shap_deep(model, x, background, torch.tensor([0, 1, 2, 0]), max_batch=6)  # references in threes
    assert torch.allclose(chunked.values[0], result.values[0], atol=1e-6)
    gen = torch.Generator().manual_seed(3)
    few = shap_deep(model, x, background, 0, nsamples=5, generator=gen)
    again = shap_deep(model, x, background, 0, nsamples=5, generator=torch.Generator().manual_seed(3))
    assert few.nsamples.tolist() == [5] * 4 and torch.equal(few.values[0], again.values[0])


def test_kernel_is_exact_shapley_and_partition_exact_owen() -> None:
    model, x, background = smooth_mlp(5), randn(3, 5, seed=15), randn(6, 5, seed=16)
    kernel = shap_kernel(model, x, background, 1, nsamples=64)  # 2**5 - 2 = 30 coalitions: all enumerated
    partition = shap_partition(model, x, background, 1, nsamples=500)

    def f(rows: Tensor) -> Tensor:
        with torch.no_grad():
            return model(rows)[:, 1]

    every_order = list(itertools.permutations(range(5)))
    tree_orders = hierarchy_orders(5)
    assert 0 < len(tree_orders) < len(every_order)
    for b in range(3):
        shapley = brute_force_values(f, x[b], background, every_order).float()
        owen = brute_force_values(f, x[b], background, tree_orders).float()
        assert torch.allclose(kernel.values[0][b], shapley, atol=1e-5)
        assert torch.allclose(partition.values[0][b], owen, atol=1e-5)
    assert not torch.allclose(kernel.values[0], partition.values[0], atol=1e-3)  # a nonlinear model
    assert kernel.completeness_error.max() < 1e-5 and partition.completeness_error.max() < 1e-5


def test_kernel_summarises_a_large_background_by_kmeans() -> None:
    model, x, background = smooth_mlp(4), randn(2, 4, seed=17), randn(30, 4, seed=18)
    result = shap_kernel(model, x, background, 0, max_background=5)
    with torch.no_grad():
        mean = model(background)[:, 0].mean()
    assert result.completeness_error.max() < 1e-5
    assert not torch.allclose(result.base_values, mean.expand(2), atol=1e-4)  # weighted centroids' mean
    full = shap_kernel(model, x, background, 0, max_background=30)
    assert torch.allclose(full.base_values, mean.expand(2), atol=1e-5)


# ------------------------------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("engine", ["kernel", "partition"])
def test_tokens_one_value_per_position_padding_zero_keyword_first(engine: str) -> None:
    model, (ids, mask, position) = TokenModel(), keyword_batch()
    result = ENGINES[engine](model, (ids, mask), None, 1)
    values = result.values[0]
    assert [tuple(v.shape) for v in result.values] == [(6, 8), (6, 8)] and result.explained == (True, False)
    assert not result.values[1].any() and not values[ids == 0].any()
    assert torch.equal(values.argmax(1), position)
    # the model is additive in its tokens: each one's value is its share of the pooled logit, exactly
    with torch.no_grad():
        share = (model.emb(ids) @ model.head.weight[1]) * mask / mask.sum(1, keepdim=True)
    assert torch.allclose(values, share, atol=1e-5)
    assert torch.allclose(result.base_values, model.head.bias[1].detach().expand(6), atol=1e-6)  # all masked
    assert result.relative_error.max() < 1e-4
    other = ENGINES[engine](model, (ids, mask), None, 1, mask_token_id=3)
    assert not torch.allclose(other.base_values, result.base_values) and other.relative_error.max() < 1e-4


def test_deep_on_tokens_agrees_with_expected_gradients() -> None:
    model, (ids, mask, position) = TokenModel(), keyword_batch()
    background = torch.randint(1, 7, (10, 8), generator=torch.Generator().manual_seed(4))
    deep = shap_deep(model, (ids, mask), (background, None), 1)
    ours = expected_gradients(model, (ids, mask), (background, None), 1, nsamples=20)
    assert deep.values[0].shape == (6, 8) and torch.equal(deep.values[0].argmax(1), position)
    assert torch.allclose(deep.values[0], ours.values[0], atol=1e-5)  # linear in the embeddings: both exact
    assert deep.relative_error.max() < 1e-4 and not model.emb._forward_hooks


# ---------------------------------------------------------------------------------------- unsupported layers
class Square(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.block = nn.Sequential(nn.Linear(4, 4), Square())
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.block(self.fc(x))[:, None]
        return self.head(torch.relu(self.attn(h, h, h)[0][:, 0]))


class ReusedReLU(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(4, hidden), nn.Linear(hidden, 8), nn.ReLU()
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


def test_deep_names_the_layers_it_cannot_handle() -> None:
    with seeded(5):
        model = Unsupported().eval()
    x, background = randn(2, 4, seed=19), randn(6, 4, seed=20)
    with pytest.warns(UserWarning, match="does not handle these layers") as record:
        result = shap_deep(model, x, background, 0)
    message = next(str(w.message) for w in record if "does not handle" in str(w.message))
    assert "block.1 (Square: mul of two activations)" in message
    assert "attn (MultiheadAttention: attention" in message and "(the model) (Unsupported: relu)" in message
    assert "engine='gradient'" in message and "fc (" not in message and "head (" not in message
    assert result.values[0].shape == (2, 4) and torch.isfinite(result.relative_error).all()
    with pytest.raises(ValueError, match=r"`model`.*block\.1"):
        shap_deep(model, x, background, 0, strict=True)
    with pytest.warns(UserWarning, match=r"forward_fn/target \(softmax\)"):  # nonlinear outside the model
        shap_deep(relu_mlp(), randn(2, 10), randn(4, 10), lambda out: out.softmax(-1)[:, 1])


def test_deep_and_a_relu_module_called_twice() -> None:
    x, background = randn(2, 4, seed=21), randn(6, 4, seed=22)
    with seeded(6):
        same, different = ReusedReLU(8).eval(), ReusedReLU(5).eval()
    with pytest.warns(UserWarning, match=r"act \(ReLU: called 2 times"):
        shap_deep(same, x, background, 0)  # shapes agree: shap runs, with the wrong rescale for one call
    failed = r"DeepExplainer failed.*act \(ReLU"
    with pytest.warns(UserWarning, match="act"), pytest.raises(RuntimeError, match=failed):
        shap_deep(different, x, background, 0)


# ------------------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("engine", ["kernel", "partition"])
def test_masking_engines_refuse_images_and_several_inputs(engine: str) -> None:
    with seeded(7):
        conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ValueError, match=r"`engine`.*'gradient'.*3072"):
        ENGINES[engine](conv, randn(1, 3, 32, 32), randn(4, 3, 32, 32), 0)

    class Two(nn.Module):
        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return torch.cat([a, b], 1)

    with pytest.raises(ValueError, match="`inputs`.*one explained input"):
        ENGINES[engine](Two(), (randn(2, 3), randn(2, 3)), (randn(4, 3), randn(4, 3)), 0)
    with pytest.raises(ValueError, match="nsamples"):
        ENGINES[engine](smooth_mlp(), randn(2, 5), randn(4, 5), 0, nsamples=0)
    with pytest.raises(ValueError, match="mask_token_id"):
        ENGINES[engine](smooth_mlp(), randn(2, 5), randn(4, 5), 0, mask_token_id=-1)


# ------------------------------------------------------------------------------------------------ hygiene
def _odd_model() -> nn.Sequential:
    with seeded(2):
        first, act, head = nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)
    model = nn.Sequential(first, act, head).train()
    act.eval()  # a mixed train/eval state, a frozen weight, a gradient and a hook must survive
    first.weight.requires_grad_(False)
    head.weight.grad = torch.ones_like(head.weight)
    head.register_forward_hook(lambda *a: None)
    return model


def _snapshot(model: nn.Module) -> dict:
    mods = list(model.modules())
    return {
        "training": [m.training for m in mods],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in mods],
        "torch_rng": torch.get_rng_state(),
        "np_rng": [np.copy(part) for part in np.random.get_state()],
        "py_rng": random.getstate(),
    }


@pytest.mark.parametrize("engine", ["deep", "kernel", "partition"])
def test_model_and_rng_untouched(engine: str) -> None:
    model, x, background = _odd_model(), randn(2, 10, seed=23), randn(8, 10, seed=24)
    before = _snapshot(model)
    with torch.inference_mode():
        result = ENGINES[engine](model, x, background, 0, nsamples=40)
    after = _snapshot(model)
    assert before["training"] == after["training"] and before["requires_grad"] == after["requires_grad"]
    assert before["grad_ids"] == after["grad_ids"] and before["hooks"] == after["hooks"]
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before["grad"], after["grad"]))
    assert torch.equal(before["torch_rng"], after["torch_rng"]) and before["py_rng"] == after["py_rng"]
    assert all(np.array_equal(a, b) for a, b in zip(before["np_rng"], after["np_rng"]))
    assert torch.isfinite(result.values[0]).all() and result.values[0].abs().sum() > 0


@pytest.mark.parametrize("engine", ["kernel", "partition"])
def test_deterministic_given_the_generator(engine: str) -> None:
    model, x, background = smooth_mlp(10), randn(2, 10, seed=25), randn(8, 10, seed=26)
    runs = []
    for numpy_seed, seed in ((1, 5), (2, 5), (1, 6)):
        np.random.seed(numpy_seed)  # the global numpy RNG has no say
        gen = torch.Generator().manual_seed(seed)
        runs.append(ENGINES[engine](model, x, background, 0, nsamples=60, generator=gen).values[0])
    assert torch.equal(runs[0], runs[1])
    if engine == "kernel":  # sampled coalitions (60 < 2**10 - 2): another seed, other values
        assert not torch.equal(runs[0], runs[2])
    assert math.isfinite(float(runs[0].sum()))
