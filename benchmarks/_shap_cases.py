"""The models of ``benchmarks/shap.py``: built from configs, trained here on synthetic data, weights cached.

Nothing is downloaded. Each model is trained by a fixed recipe (seeds, steps, learning rate, data sizes); the
weights are cached under ``benchmarks/.cache/`` (a folder that ignores itself in git) in a file named after a
hash of the recipe, so a change of recipe retrains. The expensive converged references are cached the same
way (keyed by the model's recipe, the reference settings and a hash of the engine's source).

* ``cnn`` -- lightning_xai's ShapesCNN (width 16) on SyntheticShapes 32 px, 120 Adam steps (~5 s).
* ``resnet18`` -- torchvision ResNet-18 (``weights=None``, 3 classes) on SyntheticShapes: 250 Adam steps at
  56 px then 50 at 112 px, batch 32 (~2-4 min on one CPU thread, once); explained at 112 px.
* ``bert`` -- a 2-layer ``BertForSequenceClassification`` (hidden 128, 2 heads, intermediate 256, vocabulary
  1000, no dropout) trained on a keyword task at length 64: ``[CLS]``, 62 random filler tokens, ``[SEP]``,
  with one keyword token at a random position; the keyword decides the class (3 classes, 4 keywords each).
  300 Adam steps of 32 sequences (~30 s, once); explained at its word embeddings, ``(input_ids,
  attention_mask)``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CACHE", "MAX_BATCH", "Case", "build_bert", "build_cnn", "build_resnet", "cached", "use_cache"]

CACHE = Path(__file__).resolve().parent / ".cache"
MAX_BATCH = 64  # rows per model call of every method and of the floor
_USE_CACHE = [True]


@dataclass
class Case:
    name: str
    model: nn.Module
    inputs: tuple[Tensor, ...]
    background: tuple[Tensor | None, ...]
    target: Tensor
    floor_fn: Callable[[int], None]  # forward+backward of n rows, MAX_BATCH rows per call
    captum: Callable[[int], Tensor]  # captum GradientShap values (explained input) at n_samples
    recipe: dict[str, Any] = field(default_factory=dict)  # identifies the trained model (cache key)
    ladder: tuple[int, ...] = (64, 256, 1024)  # points per probe of ours at fixed budgets
    shap_cap: int = 4096  # largest nsamples of the shap ladder
    captum_cap: int = 4096  # largest n_samples of the captum ladder
    extra_methods: bool = True  # also the lattice / random variants (cheap models only)
    max_nsamples: int = 2048  # cap of the adaptive runs (points per probe)
    ref_max: int = 8192  # cap of the reference's adaptive run (points per probe)
    floor_rows: int = 2048  # most rows of each floor run (one before and one after each method)


# ------------------------------------------------------------------------------------------------- caching
def recipe_key(recipe: dict[str, Any]) -> str:
    text = json.dumps({**recipe, "torch": torch.__version__.split("+")[0]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def use_cache(flag: bool) -> None:
    """Switch the disk cache on or off (off: everything is rebuilt, nothing is written)."""
    _USE_CACHE[0] = flag


def cached(name: str, key: dict[str, Any], make: Callable[[], Any]) -> Any:
    """``make()``, or its result saved earlier under the same name and key (``torch.save`` format)."""
    if not _USE_CACHE[0]:
        return make()
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# benchmark cache: trained weights and references, rebuilt when missing\n*\n")
    path = CACHE / f"{name}-{recipe_key(key)}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:
            path.unlink()
    value = make()
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    for stale in CACHE.glob(f"{name}-*.pt"):  # older recipes of the same name
        if stale != path and len(stale.stem) == len(path.stem):
            stale.unlink()
    return value


def _trained(
    name: str, recipe: dict[str, Any], model: nn.Module, train: Callable[[nn.Module], str]
) -> nn.Module:
    """Load the recipe's cached weights into ``model`` or train it (and cache); returns it in eval mode."""
    message: list[str] = []

    def make() -> dict[str, Tensor]:
        start = time.process_time()
        message.append(train(model))
        message.append(f"trained in {time.process_time() - start:.0f} cpu s")
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    model.load_state_dict(cached(name, recipe, make))
    print(f"{name}: " + (", ".join(message) if message else f"weights from {CACHE.name}/ (recipe cached)"))
    return model.eval()


def _seeded(seed: int) -> Any:
    rng = torch.random.fork_rng()
    torch.manual_seed(seed)
    return rng


def _adam(
    model: nn.Module, data: list[tuple[Tensor, ...]], steps: list[int], lr: float, batch: int, seed: int
) -> None:
    """``steps[i]`` Adam steps on ``data[i]`` (inputs..., labels), batches drawn with a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for tensors, n in zip(data, steps):
        for _ in range(n):
            idx = torch.randint(0, len(tensors[-1]), (batch,), generator=gen)
            out = model(*(t[idx] for t in tensors[:-1]))
            loss = nn.functional.cross_entropy(getattr(out, "logits", out), tensors[-1][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def _accuracy(model: nn.Module, inputs: tuple[Tensor, ...], labels: Tensor) -> float:
    with torch.no_grad():
        out = model(*inputs)
    return (getattr(out, "logits", out).argmax(1) == labels).float().mean().item()


# ------------------------------------------------------------------------------------------------ images
def _shapes(n: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    from lightning_xai.datasets import SyntheticShapes

    ds = SyntheticShapes(n, image_size=size, seed=seed)
    items = [ds[i] for i in range(n)]
    return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])


def _top_class(model: nn.Module, inputs: tuple[Tensor, ...]) -> Tensor:
    with torch.no_grad():
        out = model(*inputs)
    return getattr(out, "logits", out).argmax(1)


def _image_floor(model: nn.Module, shape: tuple[int, ...]) -> Callable[[int], None]:
    x = torch.randn(MAX_BATCH, *shape, generator=torch.Generator().manual_seed(0))

    def run(rows: int) -> None:
        for start in range(0, rows, MAX_BATCH):
            points = x[: min(MAX_BATCH, rows - start)].clone().requires_grad_(True)
            torch.autograd.grad(model(points)[:, 0].sum(), points)

    return run


def _captum_chunks(call: Callable[[int, slice], Tensor], batch: int, n: int) -> Tensor:
    """Captum expands every probe ``n`` times in one forward: split into calls of at most 256 rows."""
    per_call = max(1, 256 // max(1, n)) if n < 256 else 1
    out = []
    for start in range(0, batch, per_call):
        sl = slice(start, min(batch, start + per_call))
        parts, left = [], n
        while left > 0:
            k = min(left, 256)
            parts.append(call(k, sl).detach() * k)
            left -= k
        out.append(sum(parts) / n)
    return torch.cat(out)


def _image_captum(model: nn.Module, x: Tensor, bg: Tensor, target: Tensor) -> Callable[[int], Tensor]:
    from captum.attr import GradientShap

    def run(n: int) -> Tensor:
        return _captum_chunks(
            lambda k, sl: GradientShap(model).attribute(x[sl], baselines=bg, n_samples=k, target=target[sl]),
            x.shape[0],
            n,
        )

    return run


def _image_case(name: str, model: nn.Module, size: int, n_probe: int, n_bg: int, **kw: Any) -> Case:
    x, _ = _shapes(n_probe + n_bg, size, seed=1)
    probes, background = x[:n_probe], x[n_probe:]
    target = _top_class(model, (probes,))
    return Case(
        name,
        model,
        (probes,),
        (background,),
        target,
        _image_floor(model, tuple(probes.shape[1:])),
        _image_captum(model, probes, background, target),
        **kw,
    )


def build_cnn(quick: bool) -> Case:
    from lightning_xai.demo import ShapesCNN

    size, n_probe, n_bg = (16, 4, 8) if quick else (32, 16, 32)
    recipe = {
        "model": "ShapesCNN",
        "width": 8 if quick else 16,
        "size": size,
        "n_train": 96 if quick else 512,
        "steps": 10 if quick else 120,
        "lr": 3e-3,
        "batch": 64,
        "seed": 0,
        "v": 1,
    }
    with _seeded(0):
        model = ShapesCNN(num_classes=3, width=recipe["width"])

    def train(m: nn.Module) -> str:
        x, y = _shapes(recipe["n_train"], size, seed=0)
        _adam(m, [(x, y)], [recipe["steps"]], recipe["lr"], recipe["batch"], seed=0)
        xv, yv = _shapes(128, size, seed=99)
        return f"{recipe['steps']} steps, held-out accuracy {_accuracy(m, (xv,), yv):.2f}"

    model = _trained(f"cnn{size}", recipe, model, train)
    return _image_case(f"cnn {size}px", model, size, n_probe, n_bg, recipe=recipe)


def build_resnet(quick: bool) -> Case:
    import torchvision

    size, n_probe, n_bg = (32, 4, 8) if quick else (112, 16, 32)
    low = size // 2
    recipe = {
        "model": "resnet18",
        "size": size,
        "low": low,
        "n_low": 128 if quick else 2048,
        "n_high": 64 if quick else 1024,
        "steps": [5, 2] if quick else [250, 50],
        "lr": 1e-3,
        "batch": 32,
        "seed": 0,
        "v": 1,
    }
    with _seeded(0):
        model = torchvision.models.resnet18(weights=None, num_classes=3)

    def train(m: nn.Module) -> str:
        data = [_shapes(recipe["n_low"], low, seed=0), _shapes(recipe["n_high"], size, seed=10)]
        _adam(m, data, recipe["steps"], recipe["lr"], recipe["batch"], seed=0)
        xv, yv = _shapes(128, size, seed=99)
        acc = _accuracy(m, (xv,), yv)
        return f"{sum(recipe['steps'])} steps ({low}px then {size}px), held-out accuracy {acc:.2f}"

    model = _trained(f"resnet18-{size}", recipe, model, train)
    return _image_case(
        f"resnet18 {size}px",
        model,
        size,
        n_probe,
        n_bg,
        recipe=recipe,
        ladder=(64,),  # a ResNet-18 point costs ~60x a ShapesCNN point on one CPU thread
        shap_cap=1024,  # 64, 256, 1024: ~9 cpu minutes, enough to measure the >= 3x
        captum_cap=64,  # the second peer: one rung, extrapolated
        extra_methods=False,
        max_nsamples=256 if quick else 1024,
        ref_max=256 if quick else 1024,
        floor_rows=128,
    )


# -------------------------------------------------------------------------------------------------- text
CLS, SEP, N_KEYWORDS, FILLER = 1, 2, 4, 100  # keywords of class c: 10 + 4c ... ; fillers: 100 .. vocab-1


def keyword_batch(n: int, length: int, classes: int, vocab: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` sequences of the keyword task and their labels (class ``i % classes``, balanced)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(FILLER, vocab, (n, length), generator=gen)
    ids[:, 0], ids[:, -1] = CLS, SEP
    labels = torch.arange(n) % classes
    keyword = 10 + N_KEYWORDS * labels + torch.randint(0, N_KEYWORDS, (n,), generator=gen)
    position = torch.randint(1, length - 1, (n,), generator=gen)
    ids[torch.arange(n), position] = keyword
    return ids, labels


def build_bert(quick: bool) -> Case:
    from captum.attr import GradientShap
    from transformers import BertConfig, BertForSequenceClassification

    hidden, layers, length, n_probe, n_bg = (32, 1, 16, 4, 8) if quick else (128, 2, 64, 16, 32)
    classes, vocab = 3, 1000
    recipe = {
        "model": "bert",
        "hidden": hidden,
        "layers": layers,
        "length": length,
        "classes": classes,
        "vocab": vocab,
        "n_train": 256 if quick else 4096,
        "steps": 20 if quick else 300,
        "lr": 1e-3,
        "batch": 32,
        "seed": 0,
        "v": 1,
    }
    config = BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        vocab_size=vocab,
        num_labels=classes,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    with _seeded(0):
        model = BertForSequenceClassification(config)

    def train(m: nn.Module) -> str:
        ids, labels = keyword_batch(recipe["n_train"], length, classes, vocab, seed=0)
        mask = torch.ones_like(ids)
        _adam(m, [(ids, mask, labels)], [recipe["steps"]], recipe["lr"], recipe["batch"], seed=0)
        iv, lv = keyword_batch(256, length, classes, vocab, seed=99)
        acc = _accuracy(m, (iv, torch.ones_like(iv)), lv)
        return f"{recipe['steps']} steps on the keyword task, held-out accuracy {acc:.2f}"

    model = _trained(f"bert-{layers}x{hidden}", recipe, model, train)
    ids, _ = keyword_batch(n_probe + n_bg, length, classes, vocab, seed=1)
    probes, background = ids[:n_probe], ids[n_probe:]
    mask = torch.ones_like(probes)
    target = _top_class(model, (probes, mask))
    embed = model.get_input_embeddings()
    with torch.no_grad():
        x_emb, bg_emb = embed(probes), embed(background)
    e = torch.randn(MAX_BATCH, length, hidden, generator=torch.Generator().manual_seed(0))
    m = torch.ones(MAX_BATCH, length, dtype=torch.long)

    def floor(rows: int) -> None:
        for start in range(0, rows, MAX_BATCH):
            k = min(MAX_BATCH, rows - start)
            points = e[:k].clone().requires_grad_(True)
            logits = model(inputs_embeds=points, attention_mask=m[:k]).logits
            torch.autograd.grad(logits[:, 0].sum(), points)

    def captum(n: int) -> Tensor:
        def forward(emb: Tensor, attention_mask: Tensor) -> Tensor:
            return model(inputs_embeds=emb, attention_mask=attention_mask).logits

        return _captum_chunks(
            lambda k, sl: GradientShap(forward).attribute(
                x_emb[sl],
                baselines=bg_emb,
                n_samples=k,
                target=target[sl],
                additional_forward_args=(mask[sl],),
            ),
            n_probe,
            n,
        ).sum(-1)

    return Case(
        f"bert-{layers}x{hidden} L{length} (trained)",
        model,
        (probes, mask),
        (background, None),
        target,
        floor,
        captum,
        recipe=recipe,
        floor_rows=1024,
        captum_cap=1024,
    )
