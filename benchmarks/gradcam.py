"""Grad-CAM speed: lightning_xai's pure-torch engine against pytorch_grad_cam and the autograd floor.

    python benchmarks/gradcam.py [--threads 2] [--repeats 7] [--quick]

For torchvision ResNet-18 (224 px, 16 images, ``layer4.1``) and a small ViT (224 px, patch 16, 6 layers, width
384, 16 images, last block's ``ln_1``), randomly initialised, on the CPU, it times:

* floor: one forward with the target layer hooked + ``torch.autograd.grad`` of the target scores to that
  layer's output only -- the least any gradient CAM must do;
* ours: ``lightning_xai.functional.grad_cam`` (gradcam, gradcam++), guard and normalisation included;
* pytorch_grad_cam: ``GradCAM`` / ``GradCAMPlusPlus`` used as documented (it back-propagates into every
  parameter and post-processes in numpy).

Implementations run round-robin inside each repeat (after one warm-up round) and the median is reported.
Columns: seconds, ratio to the floor, speed-up of ours over pytorch_grad_cam for the same method, and the
largest absolute difference between the two maps. ``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_xai.functional import find_target_layer, grad_cam, resolve_layer

HEADER = ("model", "method", "impl", "seconds", "x floor", "speed-up vs pgc", "max abs diff")


def build_models(quick: bool) -> list[tuple[str, nn.Module, Tensor]]:
    torch.manual_seed(0)
    size, batch = (64, 2) if quick else (224, 16)
    resnet = torchvision.models.resnet18(weights=None).eval()
    if quick:
        vit = torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
        )
        vit_size = 32
    else:
        vit = torchvision.models.VisionTransformer(
            image_size=224, patch_size=16, num_layers=6, num_heads=6, hidden_dim=384, mlp_dim=1536
        )
        vit_size = 224
    nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision zero-initialises the head: all-zero maps
    vit.eval()
    return [
        (f"resnet18 {size}px x{batch}", resnet, torch.randn(batch, 3, size, size)),
        (f"vit-6x384 {vit_size}px x{batch}" if not quick else f"vit-tiny {vit_size}px x{batch}", vit,
         torch.randn(batch, 3, vit_size, vit_size)),
    ]


def floor_fn(model: nn.Module, x: Tensor, target: Tensor, layer: nn.Module) -> Callable[[], Any]:
    """Forward + autograd.grad of the target scores to the hooked activation, nothing else."""

    def run() -> Tensor:
        captured: list[Tensor] = []
        handle = layer.register_forward_hook(lambda m, a, out: captured.append(out))
        try:
            logits = model(x)
        finally:
            handle.remove()
        scores = logits.gather(1, target[:, None]).sum()
        return torch.autograd.grad(scores, captured[0])[0]

    return run


def ours_fn(model: nn.Module, x: Tensor, target: Tensor, layer: nn.Module, method: str,
            reshape: Callable[[Tensor], Tensor] | None) -> Callable[[], Tensor]:
    return lambda: grad_cam(model, x, target, layer, method=method, reshape_transform=reshape)


def pgc_fn(model: nn.Module, x: Tensor, target: Tensor, layer: nn.Module, method: str,
           reshape: Callable[[Tensor], Tensor] | None) -> Callable[[], Tensor]:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}[method]
    targets = [ClassifierOutputTarget(int(t)) for t in target]

    def run() -> Tensor:
        with cls(model, [layer], reshape_transform=reshape) as engine:
            return torch.from_numpy(engine(x, targets))

    return run


def time_round_robin(
    fns: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, float], dict[str, Any]]:
    outputs = {name: fn() for name, fn in fns.items()}  # warm-up, and the maps for the comparison
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}, outputs


def benchmark(quick: bool, repeats: int) -> list[tuple[str, ...]]:
    rows = []
    for label, model, x in build_models(quick):
        target = torch.arange(x.shape[0]) % 10
        name, reshape = find_target_layer(model, x)
        layer = resolve_layer(model, name)
        fns: dict[str, Callable[[], Any]] = {"floor": floor_fn(model, x, target, layer)}
        for method in ("gradcam", "gradcam++"):
            fns[f"ours {method}"] = ours_fn(model, x, target, layer, method, reshape)
            fns[f"pgc {method}"] = pgc_fn(model, x, target, layer, method, reshape)
        seconds, outputs = time_round_robin(fns, repeats)
        floor = seconds["floor"]
        rows.append((f"{label} [{name}]", "-", "floor", f"{floor:.4f}", "1.00", "-", "-"))
        for method in ("gradcam", "gradcam++"):
            ours, pgc = seconds[f"ours {method}"], seconds[f"pgc {method}"]
            diff = (outputs[f"ours {method}"] - outputs[f"pgc {method}"]).abs().max().item()
            ratio, speed_up = f"{ours / floor:.2f}", f"{pgc / ours:.2f}x"
            rows.append((label, method, "lightning_xai", f"{ours:.4f}", ratio, speed_up, f"{diff:.1e}"))
            rows.append((label, method, "pytorch_grad_cam", f"{pgc:.4f}", f"{pgc / floor:.2f}", "-", "-"))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    line = " | ".join(h.ljust(w) for h, w in zip(HEADER, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds after a warm-up (default 7)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 7)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, CPU, "
        f"{torch.get_num_threads()} threads, median of {repeats} after 1 warm-up, random init"
    )
    rows = benchmark(args.quick, repeats)
    print_table(rows)
    if hasattr(os, "getloadavg"):  # timings from a busy machine are not comparable: say how busy it was
        print(f"load average at the end (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
