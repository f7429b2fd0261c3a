"""Attention explainer speed: lightning_xai's rollout and gradient-weighted rollout against a hand-written eager loop.

    python benchmarks/attention.py [--threads 2] [--repeats 5] [--quick]

For a ViT-B/16-shaped Hugging Face ViT (224 px, 12 layers, width 768, 12 heads) and a BERT-base-shaped BERT
(sequence length 128), randomly initialised, on the CPU, with a small batch, it times:

* floor: what any exact method must do, written by hand: a copy of the model switched to eager attention once, one
  forward with ``output_attentions=True`` (under ``torch.no_grad()`` for rollout; with autograd and one
  ``torch.autograd.grad`` of the target logits to the attentions for grad_rollout), then the rollout product;
* ours: ``RolloutExplainer`` / ``GradRolloutExplainer``'s ``explain`` on the model as the user has it (SDPA), which
  switches to eager for the pass, captures, rolls out, maps the scores to the input and restores the model
  (the token layout found at the warm-up call is cached, as in a callback).

Implementations run round-robin inside each repeat (after one warm-up round); the median is reported with the ratio
to the floor (the target is at most 1.2x) and the largest absolute difference between the two token scores.
``--quick`` shrinks everything for a smoke run.

Measured (1 thread, load ~2 on 2 shared cores, batch 2): ViT-B/16 rollout 0.93x, grad_rollout 1.02x; BERT-base
L128 rollout 0.99x, grad_rollout 1.04x of the floor, scores identical. With 2 threads on a machine loaded to ~6 the
medians scatter (1.0-1.8x on either side run to run): compare on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers import GradRolloutExplainer, RolloutExplainer
from lightning_xai.functional.attention import grad_rollout, query_scores, rollout

HEADER = ("model", "method", "impl", "seconds", "x floor", "max abs diff")


def build_models(quick: bool) -> list[tuple[str, nn.Module, dict[str, Tensor]]]:
    import transformers as hf

    torch.manual_seed(0)
    if quick:
        sizes: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                 "intermediate_size": 64}
        image, patch, length, batch = 32, 8, 16, 2
    else:
        sizes = {}  # the configs' defaults: 12 layers, width 768, 12 heads, MLP 3072
        image, patch, length, batch = 224, 16, 128, 2
    vit = hf.ViTForImageClassification(hf.ViTConfig(image_size=image, patch_size=patch, num_labels=10, **sizes))
    bert = hf.BertForSequenceClassification(hf.BertConfig(num_labels=2, **sizes))
    ids = torch.randint(1000, 2000, (batch, length))
    return [
        (f"vit {'tiny' if quick else 'B/16'} {image}px x{batch}", vit.eval(),
         {"pixel_values": torch.randn(batch, 3, image, image)}),
        (f"bert {'tiny' if quick else 'base'} L{length} x{batch}", bert.eval(),
         {"input_ids": ids, "attention_mask": torch.ones_like(ids)}),
    ]


def floor_fn(model: nn.Module, inputs: dict[str, Tensor], target: Tensor, gradients: bool) -> Callable[[], Tensor]:
    """Eager copy, one forward with output_attentions (+ autograd.grad), the rollout product, the CLS row."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")

    def run() -> Tensor:
        with torch.set_grad_enabled(gradients):
            out = eager(**inputs, output_attentions=True)
        if not gradients:
            return query_scores(rollout(out.attentions), 0)
        grads = torch.autograd.grad(out.logits.gather(1, target[:, None]).sum(), out.attentions)
        return query_scores(grad_rollout([a.detach() for a in out.attentions], grads), 0)

    return run


def ours_fn(model: nn.Module, inputs: dict[str, Tensor], target: Tensor, gradients: bool) -> Callable[[], Tensor]:
    explainer = GradRolloutExplainer() if gradients else RolloutExplainer()
    probes = ModelInputs(kwargs=inputs)

    def run() -> Tensor:
        e = explainer.explain(model, probes, target=target)
        return e.scores.flatten(1)

    return run


def time_round_robin(fns: dict[str, Callable[[], Any]], repeats: int
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    outputs = {name: fn() for name, fn in fns.items()}  # warm-up (and the layer search, cached), and the scores
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}, outputs


def benchmark(quick: bool, repeats: int) -> list[tuple[str, ...]]:
    rows = []
    for label, model, inputs in build_models(quick):
        target = torch.arange(next(iter(inputs.values())).shape[0]) % 2
        fns: dict[str, Callable[[], Any]] = {}
        for method, gradients in (("rollout", False), ("grad_rollout", True)):
            fns[f"floor {method}"] = floor_fn(model, inputs, target, gradients)
            fns[f"ours {method}"] = ours_fn(model, inputs, target, gradients)
        seconds, outputs = time_round_robin(fns, repeats)
        for method in ("rollout", "grad_rollout"):
            floor, ours = seconds[f"floor {method}"], seconds[f"ours {method}"]
            cls_free = outputs[f"floor {method}"][:, 1:] if "vit" in label else outputs[f"floor {method}"]
            diff = (outputs[f"ours {method}"] - cls_free).abs().max().item()
            rows.append((label, method, "floor (eager loop)", f"{floor:.4f}", "1.00", "-"))
            rows.append((label, method, "lightning_xai", f"{ours:.4f}", f"{ours / floor:.2f}", f"{diff:.1e}"))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print(" | ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds after a warm-up (default 5)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, median of {repeats} after 1 warm-up, "
          "random init")
    print_table(benchmark(args.quick, repeats))
    if hasattr(os, "getloadavg"):  # timings from a busy machine are not comparable: say how busy it was
        print(f"load average at the end (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
