"""Integrated gradients to a tolerance: our adaptive engine against captum's fixed ``n_steps`` raised on a ladder.

    python benchmarks/attribution_ig.py [--threads 2] [--probes 16] [--no-resnet] [--quick]

Models (nothing is downloaded; everything on the CPU):

* ``cnn`` -- lightning_xai's ShapesCNN (width 16) trained here for 60 full-batch Adam steps on 256
  SyntheticShapes images of 32 px (a few seconds); probes: 16 held-out images, target their label.
* ``resnet18`` -- torchvision ResNet-18 (``weights=None``, 3 classes), random init, eval mode, 4 SyntheticShapes
  images of 112 x 112; target the predicted class; baseline ``"blur"`` (from zeros its path is exactly linear:
  a random-init ReLU ResNet in eval mode is positively homogeneous). Captum's ladder stops at 64 (~1-2 min on
  2 CPU threads); ``--no-resnet`` skips it.

Baseline zeros for the cnn. Both engines run through ``lightning_xai.functional.attribution.attribute`` (same guard, same
``f(x)``/``f(baseline)``, ``max_batch=64`` rows per forward/backward): ours with ``completeness_tol=0.01``
(every probe to 1% where possible, ``max_steps=1024``), captum's ``IntegratedGradients`` (Gauss-Legendre) at
``n_steps`` = 8, 16, 32, ... until the median relative completeness error is <= 1% (and, further, until every
probe is). Reported: seconds of the run that reached it and of the whole ladder up to it (what raising
``n_steps`` by hand costs), gradient rows (forward + backward; ours also counts its 2 forward-only rows per
probe for ``f(x)``, ``f(baseline)``), median / max relative error, and ratios in the same run. Peak memory is not
measured on the CPU (tracemalloc does not see torch's allocator); on CUDA ``torch.cuda.max_memory_allocated``
is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_xai.functional.attribution import attribute  # noqa: E402

MAX_BATCH = 64


def shapes(n: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    from lightning_xai.datasets import SyntheticShapes

    data = SyntheticShapes(num_samples=n, image_size=size, seed=seed)
    return torch.stack([data[i][0] for i in range(n)]), torch.stack([data[i][1] for i in range(n)])


def build_cnn(probes: int, quick: bool) -> tuple[str, nn.Module, Tensor, Tensor]:
    from lightning_xai.demo import ShapesCNN

    steps, n, size = (10, 64, 16) if quick else (60, 256, 32)
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = ShapesCNN(num_classes=3, width=16)
        x, y = shapes(n, size, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval().requires_grad_(False)
    xv, yv = shapes(probes, size, seed=99)
    with torch.no_grad():
        acc = float((model(xv).argmax(-1) == yv).float().mean())
    print(f"cnn: ShapesCNN width 16, {size} px, trained {steps} Adam steps on {n} images in "
          f"{time.perf_counter() - start:.1f} s, probe accuracy {acc:.2f}")
    return f"cnn {size}px", model, xv, yv


def build_resnet(probes: int, quick: bool) -> tuple[str, nn.Module, Tensor, Tensor]:
    import torchvision

    size = 32 if quick else 112
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None, num_classes=3).eval().requires_grad_(False)
    x, _ = shapes(probes, size, seed=99)
    with torch.no_grad():
        y = model(x).argmax(-1)
    print(f"resnet18: torchvision ResNet-18, random init, {size} px, target the predicted class")
    return f"resnet18 {size}px", model, x, y


def run(model: nn.Module, x: Tensor, y: Tensor, **kw) -> tuple[float, object]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = attribute(model, x, y, "integrated_gradients", max_batch=MAX_BATCH, **kw)
    return time.perf_counter() - start, result


def compare(name: str, model: nn.Module, x: Tensor, y: Tensor, cap: int, baseline: str = "zeros") -> None:
    b = x.shape[0]
    run(model, x[:2], y[:2], n_steps=4, baseline=baseline)  # warm-up
    ours_s, ours = run(model, x, y, completeness_tol=0.01, max_steps=1024, baseline=baseline)
    rel = ours.relative_error
    ours_rows = int(ours.n_steps_used.sum()) + 2 * b
    print(f"\n== {name}: {b} probes, baseline {baseline}, relative completeness error target 1% ==")
    print(f"{'engine':<34}{'seconds':>9}{'ladder s':>10}{'rows':>9}{'median':>9}{'max':>9}{'converged':>11}")
    print(f"{'ours (completeness_tol=0.01)':<34}{ours_s:>9.2f}{ours_s:>10.2f}{ours_rows:>9}"
          f"{float(rel.median()):>9.4f}{float(rel.max()):>9.4f}{int(ours.converged.sum()):>8}/{b}")
    print(f"{'':<34}steps per probe: min {int(ours.n_steps_used.min())}, median "
          f"{int(ours.n_steps_used.median())}, max {int(ours.n_steps_used.max())}")
    ladder, n = 0.0, 8
    median_hit = all_hit = None
    while n <= cap:
        sec, res = run(model, x, y, n_steps=n, baseline=baseline)
        ladder += sec
        r = res.relative_error
        print(f"{f'captum gausslegendre n_steps={n}':<34}{sec:>9.2f}{ladder:>10.2f}{b * n:>9}"
              f"{float(r.median()):>9.4f}{float(r.max()):>9.4f}{int((r <= 0.01).sum()):>8}/{b}")
        if median_hit is None and float(r.median()) <= 0.01:
            median_hit = (n, sec, ladder, b * n)
        if float(r.max()) <= 0.01:
            all_hit = (n, sec, ladder, b * n)
            break
        n *= 2
    print(f"-- ratios captum / ours ({name}):")
    for label, hit in (("median <= 1%", median_hit), ("every probe <= 1%", all_hit)):
        if hit is None:
            print(f"   {label}: captum did not reach it by n_steps={cap} (ours: median "
                  f"{float(rel.median()):.4f}, {int(ours.converged.sum())}/{b} probes)")
            continue
        n_hit, sec, lad, rows = hit
        print(f"   {label}: captum n_steps={n_hit}: time {sec / ours_s:.2f}x (that run), {lad / ours_s:.2f}x "
              f"(ladder 8..{n_hit}), rows {rows / ours_rows:.2f}x")
    if torch.cuda.is_available():
        print(f"   cuda peak memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--no-resnet", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, CPU")
    start = time.perf_counter()
    compare(*build_cnn(args.probes, args.quick), cap=1024)
    print(f"(cnn case: {time.perf_counter() - start:.0f} s)")
    if not args.no_resnet:
        start = time.perf_counter()
        # baseline "blur": a random-init ReLU ResNet in eval mode has no biases, so f(a x) = a f(x) and the path
        # from zeros is exactly linear (every rule exact at 8 points); a blurred image is a real path
        compare(*build_resnet(min(args.probes, 4), args.quick), cap=64, baseline="blur")
        print(f"(resnet case: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
