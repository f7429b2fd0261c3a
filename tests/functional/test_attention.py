"""Truth of the attention maths: captured probabilities against transformers' own ``output_attentions=True`` under
eager attention (the model itself left on SDPA), gradients against autograd on an explicit re-computation, rollout
and Chefer's rule against independent numpy loops, and the model left exactly as it was."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai.functional.attention import (
    capture_attention,
    divided_attention,
    divided_grad_rollout,
    divided_rollout,
    find_attention_modules,
    grad_rollout,
    query_scores,
    rollout,
)
from tests.helpers import TINY_ATTENTION_MODELS, TINY_HF, randn, seeded, tiny_attention_model

pytest.importorskip("transformers")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices: one thread is many times faster than two contending for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _logits(output):
    if isinstance(output, torch.Tensor):
        return output
    return output.logits if getattr(output, "logits", None) is not None else output[0]


def _forward(keys):
    def fwd(model, *tensors):
        if keys == ["x"]:
            return _logits(model(*tensors))
        return _logits(model(**dict(zip(keys, tensors))))

    return fwd


def _reference_attentions(name, model, inputs):
    """transformers' own probabilities: a copy switched to eager, output_attentions=True."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    if name == "wav2vec2":  # its classification wrapper returns no attentions (a transformers quirk): the base model
        ref = ref.wav2vec2
    out = ref(**inputs, output_attentions=True)
    return out.attentions, ref


def _torchvision_reference(model, x):
    """softmax(q k^T / sqrt(d)) per head from each block's normalised input and the in_proj weights."""
    found = []
    for block in model.encoder.layers:
        block.ln_1.register_forward_hook(lambda m, a, out: found.append(out))
    with torch.no_grad():
        model(x)
    attentions = []
    for block, h in zip(model.encoder.layers, found):
        mha = block.self_attention
        q, k, _ = nn.functional.linear(h, mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
        b, n, d = q.shape
        heads = mha.num_heads
        q = q.view(b, n, heads, d // heads).transpose(1, 2)
        k = k.view(b, n, heads, d // heads).transpose(1, 2)
        attentions.append(torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1))
    return attentions


@pytest.mark.parametrize("name", TINY_ATTENTION_MODELS)
def test_captured_probabilities_equal_eager_output_attentions(name):
    model, inputs = tiny_attention_model(name)
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    assert before in ("sdpa", None)  # the model runs SDPA (or nn.MultiheadAttention's fused path)
    cap = capture_attention(model, tuple(inputs.values()), forward_fn=_forward(list(inputs)))
    assert getattr(getattr(model, "config", None), "_attn_implementation", None) == before
    if name == "torchvision_vit":
        expected = _torchvision_reference(copy.deepcopy(model), inputs["x"])
    else:
        expected, _ = _reference_attentions(name, model, inputs)
    assert len(cap.attentions) == len(expected) == 2
    for got, want in zip(cap.attentions, expected):
        torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["bert", "vit", "whisper"])
def test_gradients_equal_autograd_on_eager_output_attentions(name):
    model, inputs = tiny_attention_model(name)
    cap = capture_attention(model, tuple(inputs.values()), 1, forward_fn=_forward(list(inputs)), gradients=True)
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    out = ref(**inputs, output_attentions=True)
    attentions = out.attentions if out.attentions else out.encoder_attentions
    want = torch.autograd.grad(out.logits[:, 1].sum(), attentions)
    for got, w in zip(cap.gradients, want):
        torch.testing.assert_close(got, w, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cap.scores, out.logits[:, 1].detach(), atol=1e-5, rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())


class _MHANet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0][:, 0])


def test_multihead_attention_gradients_equal_an_explicit_recomputation():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = _MHANet().eval()
    x = randn(2, 5, 8)
    cap = capture_attention(net, x, torch.tensor([0, 2]), gradients=True)
    mha = net.attn
    q, k, v = nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
    split = lambda t: t.view(2, 5, 2, 4).transpose(1, 2)
    a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / 2.0, -1).detach().requires_grad_(True)
    out = mha.out_proj((a @ split(v)).transpose(1, 2).reshape(2, 5, 8))
    score = net.head(out[:, 0]).gather(1, torch.tensor([[0], [2]])).sum()
    (want,) = torch.autograd.grad(score, a)
    torch.testing.assert_close(cap.attentions[0], a.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(cap.gradients[0], want, atol=1e-6, rtol=1e-5)
    assert net.attn(x, x, x, need_weights=False)[1] is None  # the pre-hook is gone
    assert all(p.grad is None for p in net.parameters())


# ------------------------------------------------------------------------------------ rollout maths
def _numpy_rollout(a, fusion, ratio, last):
    a = a.double().numpy()
    out = []
    for sample in a:
        n = sample.shape[-1]
        r = np.eye(n)
        for layer in sample[: last + 1]:
            f = {"mean": layer.mean(0), "max": layer.max(0), "min": layer.min(0)}[fusion].copy()
            off = [(i, j) for i in range(n) for j in range(n) if i != j]
            off.sort(key=lambda ij: f[ij])
            for ij in off[: int(ratio * len(off))]:
                f[ij] = 0.0
            f = 0.5 * f + 0.5 * np.eye(n)
            f = f / f.sum(1, keepdims=True)
            r = f @ r
        out.append(r)
    return torch.tensor(np.stack(out))


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("layer", [None, 0, -2])
def test_rollout_equals_the_formula(fusion, ratio, layer):
    a = torch.softmax(randn(2, 3, 4, 6, 6, seed=3) * 2, -1)
    got = rollout(a.unbind(1), head_fusion=fusion, discard_ratio=ratio, layer=layer)
    last = 2 if layer is None else layer % 3
    torch.testing.assert_close(got.double(), _numpy_rollout(a, fusion, ratio, last), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 6))


def test_grad_rollout_equals_chefers_rule():
    a = torch.softmax(randn(2, 3, 4, 5, 5, seed=4), -1)
    g = randn(2, 3, 4, 5, 5, seed=5)
    want = []
    for sample_a, sample_g in zip(a.double().numpy(), g.double().numpy()):
        r = np.eye(5)
        for la, lg in zip(sample_a, sample_g):
            cam = np.maximum(la * lg, 0).mean(0)
            r = r + cam @ r
        want.append(r)
    torch.testing.assert_close(grad_rollout(a, g).double(), torch.tensor(np.stack(want)), atol=1e-6, rtol=1e-6)
    first = grad_rollout(a, g, layer=0)
    torch.testing.assert_close(first, torch.eye(5) + (a[:, 0] * g[:, 0]).clamp(min=0).mean(1))


def test_query_scores_rows_and_masked_mean():
    m = torch.arange(18.0).view(2, 3, 3)
    assert query_scores(m, torch.tensor([0, 2])).tolist() == [[0.0, 1.0, 2.0], [15.0, 16.0, 17.0]]
    mean = query_scores(m, None, mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    torch.testing.assert_close(mean, torch.stack([m[0, :2].mean(0), m[1].mean(0)]))


def test_randomised_weights_change_rollout():
    model, inputs = tiny_attention_model("vit")
    other, _ = tiny_attention_model("vit", seed=5)
    fwd = _forward(list(inputs))
    maps = [query_scores(rollout(capture_attention(m, inputs["pixel_values"], forward_fn=fwd).attentions), 0)[:, 1:]
            for m in (model, other)]
    for a, b in zip(*maps):  # the patch scores of each image: unrelated after re-initialisation
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] < 0.5


# ------------------------------------------------------------------------------------------- hygiene
def test_model_left_exactly_as_found_even_on_error():
    import transformers as hf

    from tests.helpers import TINY_HF

    config = hf.CLIPConfig(text_config=dict(vocab_size=60, max_position_embeddings=16, **TINY_HF),
                           vision_config=dict(image_size=32, patch_size=8, **TINY_HF), projection_dim=8)
    model = hf.CLIPModel(config).train()
    model.text_model.encoder.layers[0].mlp.fc1.weight.requires_grad_(False)
    model.visual_projection.weight.grad = torch.ones_like(model.visual_projection.weight)
    flags = lambda: (model.config._attn_implementation, model.config.text_config._attn_implementation,
                     model.config.vision_config._attn_implementation, "_attn_implementation_internal" in
                     vars(model.config))
    inputs = (torch.randint(3, 60, (2, 6), generator=torch.Generator().manual_seed(0)), randn(2, 3, 32, 32))
    before = (flags(), [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
              torch.get_rng_state(), random.getstate())
    seen = []

    def fwd(m, ids, pixels):
        seen.extend({m.config._attn_implementation, m.text_model.config._attn_implementation,
                     m.vision_model.config._attn_implementation})
        torch.rand(3), random.random()
        return m(input_ids=ids, pixel_values=pixels).logits_per_image

    cap = capture_attention(model, inputs, 0, forward_fn=fwd, gradients=True)
    assert seen == ["eager"] and len(cap.attentions) == 4  # both towers, eager for the pass only
    def broken(m, *t):
        fwd(m, *t)
        raise RuntimeError("boom")

    for run in ("after a capture", "after an error"):
        if run == "after an error":
            with pytest.raises(RuntimeError, match="boom"):
                capture_attention(model, inputs, 0, forward_fn=broken, gradients=True)
        after = (flags(), [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
                 torch.get_rng_state(), random.getstate())
        assert after[0] == before[0] == (("sdpa",) * 3 + (True,)), run
        assert after[1:3] == before[1:3], run
        assert torch.equal(after[3], before[3]) and after[4] == before[4], run
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules()), run
        assert torch.equal(model.visual_projection.weight.grad, torch.ones_like(model.visual_projection.weight))
        assert all(p.grad is None for n, p in model.named_parameters() if n != "visual_projection.weight"), run


def test_frozen_model_still_gets_gradients():
    model, inputs = tiny_attention_model("bert")
    model.requires_grad_(False)
    cap = capture_attention(model, tuple(inputs.values()), 0, forward_fn=_forward(list(inputs)), gradients=True)
    assert all(g.abs().sum() > 0 for g in cap.gradients)
    assert not any(p.requires_grad for p in model.parameters())


# -------------------------------------------------------------------------------------------- errors
def test_no_attention_names_the_argument_and_candidates():
    net = nn.Sequential(nn.Linear(4, 4))
    net.add_module("my_attn", nn.Sequential(nn.Linear(4, 4), nn.Softmax(-1)))
    with pytest.raises(ValueError, match=r"attention_modules.*Candidates: \['my_attn', 'my_attn.1'\]"):
        find_attention_modules(net)
    with pytest.raises(ValueError, match=r"`attention_modules` to be names of submodules.*'nope'"):
        find_attention_modules(net, ["nope"])


def test_named_modules_whose_output_is_the_probabilities():
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qk = nn.Linear(4, 8)
            self.softmax = nn.Softmax(-1)

        def forward(self, x):
            q, k = self.qk(x).view(x.shape[0], x.shape[1], 2, 4).transpose(1, 2).chunk(2, -1)
            a = self.softmax(q @ k.transpose(-1, -2))
            return (a @ x[:, None, :, :2]).flatten(1).sum(-1, keepdim=True)

    net = Custom()
    cap = capture_attention(net, randn(2, 3, 4), 0, attention_modules="soft*", gradients=True)
    assert cap.modules == ("softmax",) and cap.attentions[0].shape == (2, 2, 3, 3)
    with pytest.raises(ValueError, match=r"`attention_modules` to be modules whose output is the \(batch, heads"):
        capture_attention(net, randn(2, 3, 4), attention_modules=["qk"])


def test_swin_is_refused_with_the_reason():
    model, inputs = tiny_attention_model("swin")
    with pytest.raises(ValueError, match=r"window attention.*not defined.*gradcam.*attention_modules="):
        capture_attention(model, inputs["pixel_values"], forward_fn=lambda m, x: m(pixel_values=x).logits)


def test_timesformer_other_attention_types_are_refused_naming_the_argument():
    transformers = pytest.importorskip("transformers")
    with seeded(0):
        model = transformers.TimesformerForVideoClassification(transformers.TimesformerConfig(
            image_size=16, patch_size=8, num_frames=2, num_labels=2, attention_type="space_only", **TINY_HF)).eval()
    with pytest.raises(ValueError, match=r"`attention_modules` to be a TimeSformer with attention_type="
                                         r"'divided_space_time'.*'space_only'"):
        capture_attention(model, randn(1, 2, 3, 16, 16), forward_fn=lambda m, x: m(pixel_values=x).logits)


# ------------------------------------------------------------------- divided space-time attention (TimeSformer)
def _timesformer_capture(model, inputs, target=1):
    return capture_attention(model, inputs["pixel_values"], target, forward_fn=lambda m, x: m(pixel_values=x).logits,
                             gradients=True)


def test_timesformer_captures_the_temporal_and_spatial_probabilities_exactly():
    model, inputs = tiny_attention_model("timesformer")
    model.train()
    modes, implementation = [m.training for m in model.modules()], vars(model.config).get("_attn_implementation_internal")
    cap = _timesformer_capture(model, inputs)
    assert cap.kinds == ("temporal", "spatial") * 2 and cap.modules[0].endswith("temporal_attention.attention.attn_drop")
    ref = copy.deepcopy(model).eval()
    normed = []  # the temporal attention's input, to recompute its probabilities from its own weights
    for block in ref.timesformer.encoder.layer:
        block.temporal_layernorm.register_forward_hook(lambda m, a, out: normed.append(out))
    out = ref(**inputs, output_attentions=True)
    (want_grads,) = [torch.autograd.grad(out.logits[:, 1].sum(), out.attentions)]
    for index, block in enumerate(ref.timesformer.encoder.layer):
        attn = block.temporal_attention.attention
        q, k, _ = attn.qkv(normed[index]).view(16 * 2, 4, 3, 2, 16).permute(2, 0, 3, 1, 4)
        temporal = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, -1)
        torch.testing.assert_close(cap.attentions[2 * index], temporal.detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(cap.attentions[2 * index + 1], out.attentions[index].detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(cap.gradients[2 * index + 1], want_grads[index], atol=1e-6, rtol=1e-5)
        assert cap.gradients[2 * index].abs().sum() > 0  # the score depends on the temporal attention too
    assert [m.training for m in model.modules()] == modes
    assert vars(model.config).get("_attn_implementation_internal") == implementation  # eager for the pass only
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def _np_step(attention, fusion, ratio):
    """fuse heads, drop the smallest off-diagonal entries, 0.5 A + 0.5 I, rows renormalised (one matrix)."""
    f = {"mean": attention.mean(0), "max": attention.max(0), "min": attention.min(0)}[fusion].copy()
    n = f.shape[0]
    off = sorted(((i, j) for i in range(n) for j in range(n) if i != j), key=lambda ij: f[ij])
    for ij in off[: int(ratio * len(off))]:
        f[ij] = 0.0
    f = 0.5 * f + 0.5 * np.eye(n)
    return f / f.sum(1, keepdims=True)


def _dense_blocks(temporal, spatial, frames, patches, cls_reduce, step):
    """Per sample, the dense (1 + T N)^2 temporal and spatial matrices in TimeSformer's own token order
    (1 + n T + t), built entry by entry."""
    m = 1 + frames * patches
    batch = spatial.shape[0] // frames
    out = []
    for b in range(batch):
        tm, sm = np.zeros((m, m)), np.zeros((m, m))
        tm[0, 0] = 1.0 if cls_reduce == "mean" else 0.0  # rollout: the class token's residual; Chefer: no attention
        for n in range(patches):
            a = step(temporal[b * patches + n])
            for t in range(frames):
                for u in range(frames):
                    tm[1 + n * frames + t, 1 + n * frames + u] = a[t, u]
        for t in range(frames):
            a = step(spatial[b * frames + t])
            weight = 1.0 / frames if cls_reduce == "mean" else 1.0
            sm[0, 0] += weight * a[0, 0]
            for n in range(patches):
                sm[0, 1 + n * frames + t] += weight * a[0, 1 + n]
                sm[1 + n * frames + t, 0] = a[1 + n, 0]
                for k in range(patches):
                    sm[1 + n * frames + t, 1 + k * frames + t] = a[1 + n, 1 + k]
        out.append((tm, sm))
    return out


def _to_frame_major(r, frames, patches):
    order = [0] + [1 + n * frames + t for t in range(frames) for n in range(patches)]
    return r[np.ix_(order, order)]


@pytest.mark.parametrize("fusion, ratio, layer", [("mean", 0.0, None), ("max", 0.5, None), ("min", 0.0, 0)])
def test_timesformer_rollout_equals_the_composed_formula(fusion, ratio, layer):
    model, inputs = tiny_attention_model("timesformer")
    cap = _timesformer_capture(model, inputs)
    d = divided_attention(cap.attentions, cap.kinds)
    got = divided_rollout(d, head_fusion=fusion, discard_ratio=ratio, layer=layer)
    blocks = [_dense_blocks(t.double().numpy(), s.double().numpy(), 4, 16, "mean",
                            lambda a: _np_step(a, fusion, ratio)) for t, s in zip(d.temporal, d.spatial)]
    for b in range(2):
        r = np.eye(65)
        for per_sample in blocks[: 1 if layer == 0 else 2]:
            tm, sm = per_sample[b]
            r = sm @ tm @ r
        torch.testing.assert_close(got[b].double(), torch.tensor(_to_frame_major(r, 4, 16)), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 65))


def test_timesformer_grad_rollout_equals_the_composed_chefer_rule():
    model, inputs = tiny_attention_model("timesformer")
    cap = _timesformer_capture(model, inputs)
    d = divided_attention(cap.attentions, cap.kinds, cap.gradients)
    weighted = [(np.maximum(a.double().numpy() * g.double().numpy(), 0)) for a, g in zip(cap.attentions, cap.gradients)]
    blocks = [_dense_blocks(weighted[2 * i], weighted[2 * i + 1], 4, 16, "sum", lambda a: a.mean(0)) for i in range(2)]
    got = divided_grad_rollout(d)
    for b in range(2):
        r = np.eye(65)
        for per_sample in blocks:
            tm, sm = per_sample[b]
            r = (np.eye(65) + sm) @ (np.eye(65) + tm) @ r
        torch.testing.assert_close(got[b].double(), torch.tensor(_to_frame_major(r, 4, 16)), atol=1e-5, rtol=1e-5)
    assert (got[:, 0, 1:] > 0).any()


def test_timesformer_randomised_weights_change_rollout():
    model, inputs = tiny_attention_model("timesformer")
    other, _ = tiny_attention_model("timesformer", seed=5)
    for method in (divided_rollout, divided_grad_rollout):
        maps = []
        for m in (model, other):
            cap = _timesformer_capture(m, inputs)
            maps.append(method(divided_attention(cap.attentions, cap.kinds, cap.gradients))[:, 0, 1:])
        for a, b in zip(*maps):  # the patch scores of each clip: unrelated after re-initialisation
            assert torch.corrcoef(torch.stack([a, b]))[0, 1] < 0.5
