"""The attention explainers: what they find on a BERT trained on a keyword task, their scores against the functional
maths, token grids and maps per model family, options, errors, and the model left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai._inputs import Scorer
from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers import (
    AttentionExplanation,
    GradRolloutExplainer,
    RawAttentionExplainer,
    RolloutExplainer,
    explainer_arguments,
    get_explainer,
    list_explainers,
)
from lightning_xai.functional.attention import (
    DIVIDED_RULES,
    capture_attention,
    divided_attention,
    divided_grad_rollout,
    divided_rollout,
    grad_rollout,
    query_scores,
    rollout,
)
from tests.helpers import TINY_HF, seeded, tiny_attention_model

hf = pytest.importorskip("transformers")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices: one thread is many times faster than two contending for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _keyword_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """[CLS]=1, ten words (ids 10..49), two pads; label 1 exactly when the keyword 7 replaces one word at a random
    position (returned)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 50, (n, 13), generator=g)
    ids[:, 0] = 1
    labels = torch.arange(n) % 2
    where = torch.randint(1, 11, (n,), generator=g)
    ids[labels == 1, where[labels == 1]] = 7
    mask = torch.ones_like(ids)
    mask[:, 11:] = 0
    ids[:, 11:] = 0
    return ids, mask, labels, where


@pytest.fixture(scope="module")
def keyword_bert():
    """A 2-layer, 2-head BERT trained for 60 steps (about 4 s on one thread) to accuracy 1 on held-out sentences."""
    ids, mask, labels, _ = _keyword_batch(2048, 1)
    with seeded(0):
        model = hf.BertForSequenceClassification(hf.BertConfig(vocab_size=50, num_labels=2, **TINY_HF)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(60):
            i = torch.randint(0, len(ids), (32,))
            loss = nn.functional.cross_entropy(model(input_ids=ids[i], attention_mask=mask[i]).logits, labels[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().zero_grad(set_to_none=True)
    return model


def _top2_rate(model, method, **kwargs) -> float:
    ids, mask, labels, where = _keyword_batch(64, 2)
    inputs = ModelInputs(kwargs={"input_ids": ids, "attention_mask": mask}, labels=labels)
    e = get_explainer(method, **kwargs).explain(model, inputs, target="label")
    scores = e.scores.clone()
    scores[:, 0] = -float("inf")  # [CLS] and the pads are no words
    scores[mask == 0] = -float("inf")
    top2 = scores.topk(2, 1).indices
    hits = (top2 == where[:, None]).any(1)[labels == 1]
    return hits.float().mean().item()


def test_grad_rollout_finds_the_keyword(keyword_bert):
    """Measured: grad_rollout 1.00 of the 32 keyword sentences have the keyword in their top 2 words; plain
    rollout, raw last-layer attention and rollout with discard_ratio=0.9 also 1.00 on this task (a keyword this
    salient leaves rollout nothing to get wrong)."""
    ids, mask, labels, _ = _keyword_batch(64, 2)
    with torch.no_grad():
        assert (keyword_bert(input_ids=ids, attention_mask=mask).logits.argmax(-1) == labels).float().mean() >= 0.95
    assert _top2_rate(keyword_bert, "grad_rollout") >= 0.8
    assert _top2_rate(keyword_bert, "rollout") >= 0.5


def test_randomised_weights_lose_the_keyword(keyword_bert):
    import copy

    model = copy.deepcopy(keyword_bert)
    with seeded(3):
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.reset_parameters()
    assert _top2_rate(model, "grad_rollout") < 0.6


def test_scores_are_the_functional_rows_on_the_grid():
    model, inputs = tiny_attention_model("vit")
    fwd = lambda m, x: m(pixel_values=x).logits
    probes = ModelInputs(kwargs=inputs)
    cap = capture_attention(model, inputs["pixel_values"], torch.tensor([1, 2]), forward_fn=fwd, gradients=True)
    target = torch.tensor([1, 2])
    for explainer, matrix in [(RolloutExplainer(head_fusion="max", discard_ratio=0.5),
                               rollout(cap.attentions, "max", 0.5)),
                              (GradRolloutExplainer(layer=0), grad_rollout(cap.attentions, cap.gradients, 0)),
                              (RawAttentionExplainer(layer=0, max_raw=2), cap.attentions[0].mean(1))]:
        e = explainer.explain(model, probes, target=target)
        want = query_scores(matrix, 0)[:, 1:].reshape(2, 4, 4)
        torch.testing.assert_close(e.scores, want, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(e.values["pixel_values"], nn.functional.interpolate(
            want[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0], atol=1e-6, rtol=1e-5)
        assert isinstance(e, AttentionExplanation) and e.num_prefix_tokens == 1 and e.query == "token 0"
        assert e.target.tolist() == [1, 2] and not e.signed and e.drift_arrays().keys() == {explainer.name}
    assert e.raw.shape == (2, 2, 2, 17, 17) and e.head_scores.shape == (2, 2, 2, 4, 4)
    torch.testing.assert_close(e.raw, torch.stack(cap.attentions, 1))
    torch.testing.assert_close(e.head_scores[:, 0].mean(1), e.scores)  # layer 0's heads, fused by their mean


@pytest.mark.parametrize("name, scores, maps, prefix, query", [
    ("bert", (2, 7), (2, 7), 0, "token 0"),
    ("clip_text", (2, 7), (2, 7), 0, "end-of-text token"),
    ("deit", (2, 4, 4), (2, 32, 32), 2, "token 0"),
    ("ast", (2, 4, 3), (2, 40, 32), 2, "token 0"),  # (time, frequency) patches of a (time, mel) input
    ("whisper", (2, 1, 20), (2, 16, 40), 0, "mean"),  # frame tokens over a (mel, frames) input
    ("wav2vec2", (2, 39), (2, 400), 0, "mean"),
    ("videomae", (2, 2, 4, 4), (2, 4, 32, 32), 0, "mean"),
    ("clip_vision", (2, 4, 4), (2, 32, 32), 1, "token 0"),
    ("torchvision_vit", (2, 4, 4), (2, 32, 32), 1, "token 0"),
])
def test_token_grids_and_maps_per_model(name, scores, maps, prefix, query):
    model, inputs = tiny_attention_model(name)
    probes = ModelInputs(tuple(inputs.values())) if name == "torchvision_vit" else ModelInputs(kwargs=inputs)
    output = {"clip_text": "text_embeds", "clip_vision": "image_embeds"}.get(name)
    e = GradRolloutExplainer().explain(model, probes, scorer=Scorer(output=output))
    key = e.key
    assert tuple(e.scores.shape) == scores and tuple(e.values[key].shape) == maps
    assert e.num_prefix_tokens == prefix and e.query == query and len(e.modules) == 2
    assert torch.isfinite(e.values[key]).all() and (e.values[key] >= 0).all()
    if name == "clip_text":  # the row of each sentence's end-of-text token (positions 6 and 4)
        cap = capture_attention(model, tuple(inputs.values()), e.target, gradients=True,
                                forward_fn=lambda m, i, a: m(input_ids=i, attention_mask=a).text_embeds)
        want = query_scores(grad_rollout(cap.attentions, cap.gradients), torch.tensor([6, 4]))
        torch.testing.assert_close(e.scores, want, atol=1e-6, rtol=1e-5)
    if name == "ast":
        assert e.time_first == (key,)


def test_timesformer_scores_are_the_divided_rows_on_the_clip_grid():
    model, inputs = tiny_attention_model("timesformer")
    target = torch.tensor([1, 2])
    cap = capture_attention(model, inputs["pixel_values"], target, gradients=True,
                            forward_fn=lambda m, x: m(pixel_values=x).logits)
    d = divided_attention(cap.attentions, cap.kinds, cap.gradients)
    last = torch.stack(d.spatial[-1].mean(1).split(4))  # (clips, frames, 1 + patches, 1 + patches), heads' mean
    for explainer, want in [(RolloutExplainer(head_fusion="max", discard_ratio=0.5),
                             divided_rollout(d, "max", 0.5)[:, 0, 1:].reshape(2, 4, 4, 4)),
                            (GradRolloutExplainer(layer=0), divided_grad_rollout(d, 0)[:, 0, 1:].reshape(2, 4, 4, 4)),
                            # the class token's spatial attention to each frame's patches, averaged over frames
                            (RawAttentionExplainer(max_raw=2), last[:, :, 0, 1:].reshape(2, 4, 4, 4) / 4)]:
        e = explainer.explain(model, ModelInputs(kwargs=inputs), target=target)
        torch.testing.assert_close(e.scores, want, atol=1e-6, rtol=1e-5)
        assert tuple(e.values["pixel_values"].shape) == (2, 4, 32, 32) and e.num_prefix_tokens == 1
        assert e.query == "token 0" and len(e.modules) == 4
        assert e.settings["divided_space_time"] == DIVIDED_RULES[explainer.name]
    assert e.raw.shape == (2, 2, 2, 65, 65) and e.head_scores.shape == (2, 2, 2, 4, 4, 4)
    torch.testing.assert_close(e.head_scores[:, -1].mean(1), e.scores)  # the last layer's heads, fused by their mean
    torch.testing.assert_close(e.raw[:, 0, :, 1:17, 1:17], torch.stack(d.spatial[0][:, :, 1:, 1:].split(4))[:, 0])


def test_weighted_by_predictions_scales_by_the_explained_class_probability():
    model, inputs = tiny_attention_model("vit")
    probes = ModelInputs(kwargs=inputs)
    plain = RolloutExplainer().explain(model, probes)
    weighted = RolloutExplainer(weighted_by_predictions=True).explain(model, probes)
    with torch.no_grad():
        p = model(**inputs).logits.softmax(-1).max(-1).values
    torch.testing.assert_close(weighted.weights, p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weighted.scores, plain.scores * p[:, None, None], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="`weighted_by_predictions` to be False with a callable"):
        RolloutExplainer(weighted_by_predictions=True).explain(model, probes, target=lambda out: out.logits[:, 0])


def test_class_token_choice():
    model, inputs = tiny_attention_model("videomae")
    with pytest.raises(ValueError, match="`use_cls_token` to be False or None for VideoMAEForVideoClassification"):
        RolloutExplainer(use_cls_token=True).explain(model, ModelInputs(kwargs=inputs))
    bert, text = tiny_attention_model("bert")
    mean = RolloutExplainer(use_cls_token=False).explain(bert, ModelInputs(kwargs=text))
    cap = capture_attention(bert, tuple(text.values()), forward_fn=lambda m, i, a: m(input_ids=i,
                                                                                      attention_mask=a).logits)
    want = query_scores(rollout(cap.attentions), None, text["attention_mask"])
    assert mean.query == "mean"
    torch.testing.assert_close(mean.scores, want, atol=1e-6, rtol=1e-5)


def test_registry_arguments_and_errors():
    assert {"attention", "rollout", "grad_rollout"} <= set(list_explainers())
    assert {"head_fusion", "discard_ratio", "layer", "use_cls_token", "weighted_by_predictions",
            "attention_modules"} <= set(explainer_arguments("rollout"))
    assert get_explainer("attention", max_raw=3).max_raw == 3
    with pytest.raises(ValueError, match="`discard_ratio` to be a number in"):
        RolloutExplainer(discard_ratio=1.0)
    with pytest.raises(ValueError, match="`head_fusion`"):
        RolloutExplainer(head_fusion="median")
    swin, inputs = tiny_attention_model("swin")
    with pytest.raises(ValueError, match="window attention"):
        GradRolloutExplainer().explain(swin, ModelInputs(kwargs=inputs))


def test_model_unchanged_after_explaining():
    model, inputs = tiny_attention_model("bert")
    model.train()
    before = [m.training for m in model.modules()]
    GradRolloutExplainer().explain(model, ModelInputs(kwargs=inputs))
    assert model.config._attn_implementation == "sdpa" and [m.training for m in model.modules()] == before
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
