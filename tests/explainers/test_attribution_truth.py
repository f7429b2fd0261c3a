"""Truth of the attribution explainers on trained models with a known answer (issue 14, "Truth (tests)").

Shapes: a ShapesCNN (width 4) trained for 40 full-batch Adam steps on 128 SyntheticShapes images of 16 px (noise
0.1; distractor bars kept), explained on 16 held-out images by every registered attribution explainer at its
defaults, target the true class. Its global ``AdaptiveMaxPool2d(1)`` is swapped for the same function as a
``MaxPool2d`` over the whole 8x8 map: captum's DeepLift has a rule for ``MaxPool2d`` but not for the adaptive module,
so every method, DeepLift included, is well defined on it (no layer is differentiated plainly). DeepLift's values
still miss completeness there (median relative error ~0.1, measured): its explainer says so in a RuntimeWarning
naming the max pools (line 2b).

1. Model randomisation (Adebayo et al., 2018): every weight re-drawn, every method's map changes: the median over
   probes of the Spearman correlation of |map| (trained vs randomised) is below 0.5.
2. Object against distractor, for every gradient method. In the dataset the object is larger and brighter than the
   bar (mean normalised intensity 1.03 vs 0.84 on the 16 probes), so "more positive attribution on the object than
   its area share" is met by the randomised copy too (medians 1.4-2.0) and by input x gradient more on the random
   than on the trained model (object/bar per-pixel ratio 3.29 vs 3.22). Here the probes are 32 other scenes whose
   bar is painted in the object's colour: per probe, positive attribution per pixel on the object over that on the
   bar. Its median is above 1 for the trained model, and at least 1.25 times that of five randomised copies pooled
   (their medians 1.0-1.6 over probe seeds: a random max-pool CNN still prefers a blob to a thin bar, so the line
   is relative to that). Measured (seed 99): trained 1.76 (smoothgrad) to 4.64 (deeplift), guided backprop inf (the
   bar gets none in most probes); pooled random 1.15-1.63. The same model after 10 Adam steps (50% accuracy) fails
   it: saliency 1.32 and smoothgrad 1.22 against 1.24 and 1.15 randomised.
2b. DeepLift on the trained CNN warns that it misses completeness, naming the ``MaxPool2d`` layers.
3. Keywords: SentimentSentences (the label is decided by one sentiment word; a word-level tokenizer here, so that
   nothing is downloaded) and a text CNN trained on six templates; on the two held-out templates the keyword holds
   the largest integrated-gradients attribution toward the label (over every attended token, [CLS]/[SEP] included)
   in at least 90% of the probes.
4. Integrated gradients at its default ``completeness_tol=0.01`` meets it on that trained text model.
5. Stability: LIME, Kernel SHAP and SmoothGrad at their defaults, seed 0 vs seed 1: mean top-10% IoU >= 0.5.

Every assertion message carries the measured numbers. The models are tiny, so the module runs on one intra-op
thread (restored afterwards): two threads cost more in synchronisation than they give, many times more on a shared
machine.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_xai.adapters import ModelInputs
from lightning_xai.datasets import SentimentSentences, SyntheticShapes
from lightning_xai.datasets.sentiment import NEGATIVE_WORDS, POSITIVE_WORDS, TEMPLATES
from lightning_xai.demo import ShapesCNN
from lightning_xai.explainers import get_explainer
from lightning_xai.functional.drift import spearman, topk_iou

SIZE = 16
GRADIENT = ("saliency", "input_x_gradient", "guided_backprop", "deeplift", "integrated_gradients", "smoothgrad")
METHODS = (*GRADIENT, "occlusion", "feature_ablation", "lime", "kernel_shap")
STOCHASTIC = ("lime", "kernel_shap", "smoothgrad")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _shapes(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    ds = SyntheticShapes(num_samples=n, image_size=SIZE, noise=0.1, seed=seed)
    x, y, mask = (torch.stack(t) for t in zip(*(ds[i] for i in range(n))))
    return x, y, mask


def _trained_cnn() -> nn.Module:
    x, y, _ = _shapes(128, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ShapesCNN(num_classes=3, width=4)
        model.pool = nn.MaxPool2d(SIZE // 2)  # = AdaptiveMaxPool2d(1) on the 8x8 map; captum's DeepLift handles it
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(40):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


def _randomised(model: nn.Module, seed: int = 1) -> nn.Module:
    """A copy with every layer re-initialised (the cascading randomisation run to the input)."""
    out = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in out.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                m.reset_parameters()
    return out.eval()


def _explain(name: str, model: nn.Module, x: Tensor, y: Tensor, **kw: Any) -> Tensor:
    """The per-pixel map (channels summed) of explainer ``name`` at its defaults."""
    return get_explainer(name, **kw).explain(model, ModelInputs((x,)), target=y).maps()["input"]


def _flat(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    return flat.amax(1) <= flat.amin(1)


@pytest.fixture(scope="module")
def shapes() -> dict[str, Any]:
    model = _trained_cnn()
    random = _randomised(model)
    x, y, mask = _shapes(16, seed=99)
    with torch.no_grad():
        accuracy = float((model(x).argmax(-1) == y).float().mean())
    maps: dict[str, dict[str, Tensor]] = {"trained": {}, "random": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings("ignore", "deeplift: the attributions", RuntimeWarning)  # line 2b checks it
        for name in METHODS:
            maps["trained"][name] = _explain(name, model, x, y)
            maps["random"][name] = _explain(name, random, x, y)
    return {"model": model, "x": x, "y": y, "mask": mask, "accuracy": accuracy, "maps": maps}


def test_the_shapes_cnn_learned_the_task(shapes):
    assert shapes["accuracy"] >= 0.9, shapes["accuracy"]


def test_randomising_the_weights_changes_every_map(shapes):
    rho, blank = {}, {}
    for name in METHODS:
        trained, random = shapes["maps"]["trained"][name], shapes["maps"]["random"][name]
        assert not bool(_flat(trained).any()), f"{name}: a blank map of the trained model"
        # a blank map of the randomised model has changed, but ranks nothing: the median is over the other
        # probes, and they must be most of them (a method that blanks every map must not pass by default)
        ranked = ~_flat(random)
        blank[name] = int((~ranked).sum())
        rho[name] = round(float(spearman(trained[ranked].abs(), random[ranked].abs()).median()), 3)
    failing = {k: v for k, v in rho.items() if not v < 0.5}
    assert not failing, f"median Spearman of |map|, trained vs randomised: {rho} (blank random maps: {blank})"
    assert max(blank.values()) <= len(shapes["y"]) // 4, f"blank maps of the randomised model per method: {blank}"


def _equal_colour_probes(n: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """SyntheticShapes scenes whose distractor bar has the object's colour: ``(x, y, object mask, bar mask)``.

    Each scene is drawn without noise with and without its bar (the same ``(seed, index)``: the same scene); the bar
    is where the two differ off the object. Bar and object are painted in the object's colour, then the dataset's
    noise (0.1, from a generator seeded with ``seed``), clamping to [0, 1] and normalisation are applied.
    """
    kw: dict[str, Any] = {"num_samples": n, "image_size": SIZE, "noise": 0.0, "seed": seed, "normalize": False}
    scenes, plain = SyntheticShapes(**kw), SyntheticShapes(distractors=False, **kw)
    images, labels, objects, bars = [], [], [], []
    for i in range(n):
        image, label, obj = scenes[i]
        bar = (image != plain[i][0]).any(0) & (obj == 0)
        colour = image[:, obj.bool()][:, :1, None]  # (3, 1, 1): the object is one flat colour without noise
        images.append(torch.where(bar, colour, image))
        labels.append(label)
        objects.append(obj)
        bars.append(bar.float())
    x = torch.stack(images)
    x = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0.0, 1.0)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (SyntheticShapes.mean, SyntheticShapes.std))
    return (x - mean) / std, torch.stack(labels), torch.stack(objects), torch.stack(bars)


def _object_over_bar(maps: Tensor, obj: Tensor, bar: Tensor) -> Tensor:
    """Per probe: positive attribution per pixel on the object over that on the bar (x/0: inf; 0/0: 1)."""
    positive = maps.flatten(1).clamp_min(0)  # saliency: |gradient|, all of it
    on_object = (positive * obj.flatten(1)).sum(1) / obj.flatten(1).sum(1)
    on_bar = (positive * bar.flatten(1)).sum(1) / bar.flatten(1).sum(1)
    none = torch.where(on_object > 0, torch.inf, 1.0)
    return torch.where(on_bar > 0, on_object / on_bar.clamp_min(torch.finfo(on_bar.dtype).tiny), none)


@pytest.fixture(scope="module")
def distractor(shapes) -> dict[str, Any]:
    model = shapes["model"]
    x, y, obj, bar = _equal_colour_probes(32, seed=99)
    with torch.no_grad():
        accuracy = float((model(x).argmax(-1) == y).float().mean())
    randoms = [_randomised(model, seed) for seed in range(1, 6)]
    trained, random = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings("ignore", "deeplift: the attributions", RuntimeWarning)
        for name in GRADIENT:
            trained[name] = _object_over_bar(_explain(name, model, x, y), obj, bar)
            random[name] = torch.cat([_object_over_bar(_explain(name, r, x, y), obj, bar) for r in randoms])
    bright = {k: round(float((x.mean(1) * m).sum() / m.sum()), 3) for k, m in (("object", obj), ("bar", bar))}
    return {"accuracy": accuracy, "trained": trained, "random": random, "brightness": bright,
            "bar_pixels": int(bar.flatten(1).sum(1).min())}


def test_gradient_maps_prefer_the_object_to_an_equally_bright_distractor(distractor):
    assert distractor["accuracy"] >= 0.9, f"accuracy with the bar in the object's colour {distractor['accuracy']}"
    bright = distractor["brightness"]
    assert abs(bright["object"] - bright["bar"]) < 0.1 and distractor["bar_pixels"] > 0, (bright, distractor)
    trained = {k: round(float(v.median()), 3) for k, v in distractor["trained"].items()}
    random = {k: round(float(v.median()), 3) for k, v in distractor["random"].items()}
    numbers = f"median object/bar positive attribution per pixel, trained {trained}, randomised x5 {random}"
    assert all(v > 1.0 for v in trained.values()), numbers
    assert all(trained[k] >= 1.25 * random[k] and random[k] < torch.inf for k in GRADIENT), numbers


def test_deeplift_warns_that_it_misses_completeness_on_the_shapes_cnn(shapes):
    x, y = shapes["x"], shapes["y"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.warns(RuntimeWarning, match=r"do not add up.*features\.3 \(MaxPool2d\), pool \(MaxPool2d\)"):
            e = get_explainer("deeplift").explain(shapes["model"], ModelInputs((x,)), target=y)
    assert float(e.relative_error.median()) > 0.05, e.relative_error


def test_stochastic_methods_are_stable_between_seeds_at_their_defaults(shapes):
    x, y, model = shapes["x"], shapes["y"], shapes["model"]
    iou = {}
    for name in STOCHASTIC:
        first = shapes["maps"]["trained"][name]  # seed 0, the default
        second = _explain(name, model, x, y, seed=1)
        assert not bool(_flat(first).any() or _flat(second).any()), f"{name}: a blank map ranks nothing"
        iou[name] = round(float(topk_iou(first.abs(), second.abs(), k=0.1).mean()), 3)
    failing = {k: v for k, v in iou.items() if not v >= 0.5}
    assert not failing, f"mean top-10% IoU, seed 0 vs seed 1: {iou}"


# ------------------------------------------------------------------------------------ text: one word decides
class _Words:
    """A word-level tokenizer of the sentiment sentences: [CLS]=1 words [SEP]=2, padded with 0."""

    def __init__(self) -> None:
        words = sorted({w for t in TEMPLATES for w in t.format("").split()} | set(POSITIVE_WORDS + NEGATIVE_WORDS))
        self.vocab = {w: i + 3 for i, w in enumerate(words)}

    def __call__(self, text: str, max_length: int, **_: Any) -> dict[str, list[int]]:
        ids = [1, *(self.vocab[w] for w in text.split()), 2][:max_length]
        pad = max_length - len(ids)
        return {"input_ids": ids + [0] * pad, "attention_mask": [1] * len(ids) + [0] * pad}


class _TextCNN(nn.Module):
    """Embedding, a width-3 convolution, ReLU, max over the attended tokens, linear."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16, padding_idx=0)
        self.conv = nn.Conv1d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 2)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        h = torch.relu(self.conv(self.emb(input_ids).transpose(1, 2)))
        return self.fc(h.masked_fill(attention_mask[:, None] == 0, 0).amax(-1))


def _batch(ds: SentimentSentences) -> dict[str, Tensor]:
    return {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}


@pytest.fixture(scope="module")
def text() -> dict[str, Any]:
    tokenizer = _Words()
    train = _batch(SentimentSentences(tokenizer, templates=TEMPLATES[:6], max_length=12))
    held_out = _batch(SentimentSentences(tokenizer, templates=TEMPLATES[6:], max_length=12))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _TextCNN(len(tokenizer.vocab) + 3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
        for _ in range(100):
            loss = nn.functional.cross_entropy(model(train["input_ids"], train["attention_mask"]), train["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    model.eval()
    with torch.no_grad():
        accuracy = float((model(held_out["input_ids"], held_out["attention_mask"]).argmax(-1)
                          == held_out["labels"]).float().mean())
    inputs = ModelInputs((held_out["input_ids"],), {"attention_mask": held_out["attention_mask"]})
    explanation = get_explainer("integrated_gradients").explain(model, inputs, target=held_out["labels"])
    return {"batch": held_out, "accuracy": accuracy, "explanation": explanation}


def test_the_keyword_ranks_first_for_integrated_gradients(text):
    batch, e = text["batch"], text["explanation"]
    assert text["accuracy"] >= 0.9, f"held-out-template accuracy {text['accuracy']}"
    values = e.values["input"]  # one value per token, at the embedding output, toward the true label
    assert values.shape == batch["input_ids"].shape
    top = values.masked_fill(batch["attention_mask"] == 0, -torch.inf).argmax(1)
    hit = batch["mask"][torch.arange(len(top)), top] > 0
    assert float(hit.float().mean()) >= 0.9, f"keyword first in {float(hit.float().mean()):.3f} of probes"


def test_integrated_gradients_meets_its_default_tolerance_on_a_trained_text_model(text):
    e = text["explanation"]
    assert e.settings["completeness_tol"] == 0.01
    median = float(e.relative_error.median())
    assert median <= 0.01, f"median relative completeness error {median:.4f}, max {float(e.relative_error.max()):.4f}"
    assert torch.equal(e.converged, e.relative_error <= 0.01)
