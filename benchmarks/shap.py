"""SHAP by expected gradients: time to an accurate answer, lightning_xai against shap and captum.

    python benchmarks/shap.py [--models cnn,bert[,resnet18]] [--threads 1] [--repeats 1] [--quick]

Models (CPU): ``cnn`` -- lightning_xai's ShapesCNN trained for a fixed number of steps on SyntheticShapes 32
px; ``bert`` -- a random-init 2-layer BertForSequenceClassification (hidden 128, 2 heads, intermediate 256,
vocab 1000) at sequence length 64, ``(input_ids, attention_mask)``, explained at its word embeddings;
``resnet18`` -- torchvision ResNet-18 (weights=None) at 112 px on SyntheticShapes (budgets 64 and 256 only,
reference at 512 points per probe). 16 probes, a background of 32, the top class.

Methods, each at several budgets: ours ``expected_gradients`` with the default ``sampling="stratified"``
(every background point a baseline, a nested shifted lattice along each path folded into antithetic pairs),
``"lattice"`` (the same unfolded) and ``"random"`` (plain Monte Carlo), ours with adaptive rounds to
``completeness_tol=0.01`` (from 64 points per probe, at most the reference's points), shap's
``GradientExplainer`` (through ``shap_gradient_reference``: the explainer itself, one ``shap_values`` call per
probe on a wrapper returning the target score), captum's ``GradientShap`` (``n_samples`` split into calls of
at most 256 rows, since it has no batching of its own). Every method evaluates at most 64 rows per model call.

Columns: points = gradient points (forward+backward rows) per probe; cpu s = process CPU seconds (robust to
other jobs on a shared machine; 1 torch thread by default) and wall s; x floor = cpu s over the floor, one
batched forward+backward (64 rows per call, parameters frozen) over the same number of points; rel err =
median over probes of |sum(phi) - (f(x) - E f(background))| / |f(x) - E f(background)|; corr = median
per-probe Pearson correlation with the reference, ours stratified at 2048 points per probe (64 lattice points
on each of the 32 paths) with a different seed (its own rel err is printed); peak MiB = peak resident memory
above the RSS before the call, sampled every 2 ms by a thread after ``malloc_trim`` (the whole process: model
activations included).

The key line per model: CPU time to reach median rel err <= 1% and median corr >= 0.95 for ours with adaptive
rounds (no budget to tune), for ours at the cheapest fixed budget of the ladder that gets there, and for
shap.GradientExplainer at the smallest nsamples of its ladder that does (``--shap-ladder`` extends it); if
none does, a lower bound from its largest run and an estimate from Monte Carlo's 1/sqrt(n) rate.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

# This file is called shap.py: keep its folder off the path so that `import shap` finds the library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_xai.functional.shap import ShapResult, expected_gradients, shap_gradient_reference

HEADER = ("model", "method", "points", "cpu s", "wall s", "x floor", "rel err", "corr", "peak MiB")
MAX_BATCH = 64
TOL = 0.01


# ------------------------------------------------------------------------------------------------ models
@dataclass
class Case:
    name: str
    model: nn.Module
    inputs: tuple[Tensor, ...]
    background: tuple[Tensor | None, ...]
    target: Tensor
    floor_fn: Callable[[int], None]  # forward+backward of n rows
    captum: Callable[[int], Tensor]  # captum GradientShap values (explained input) at n_samples
    ladder: tuple[int, ...] = (64, 256, 1024)  # points per probe of the fixed-budget runs
    ref_lattice: int = 64  # lattice points per path of the reference


def _seeded(seed: int) -> Any:
    rng = torch.random.fork_rng()
    torch.manual_seed(seed)
    return rng


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
    def run(rows: int) -> None:
        x = torch.randn(MAX_BATCH, *shape)
        for start in range(0, rows, MAX_BATCH):
            points = x[: min(MAX_BATCH, rows - start)].clone().requires_grad_(True)
            torch.autograd.grad(model(points)[:, 0].sum(), points)

    return run


def _image_captum(model: nn.Module, x: Tensor, bg: Tensor, target: Tensor) -> Callable[[int], Tensor]:
    from captum.attr import GradientShap

    def run(n: int) -> Tensor:
        return _captum_chunks(
            lambda k, sl: GradientShap(model).attribute(x[sl], baselines=bg, n_samples=k, target=target[sl]),
            x.shape[0],
            n,
        )

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


def build_cnn(quick: bool) -> Case:
    from lightning_xai.demo import ShapesCNN

    size, n_probe, n_bg = (16, 4, 8) if quick else (32, 16, 32)
    x_train, y_train = _shapes(96 if quick else 512, size, seed=0)
    with _seeded(0):
        model = ShapesCNN(num_classes=3, width=8 if quick else 16)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start, steps = time.perf_counter(), (10 if quick else 120)
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_train).argmax(1) == y_train).float().mean().item()
    print(
        f"cnn: ShapesCNN trained {steps} steps in {time.perf_counter() - start:.1f} s, "
        f"train accuracy {acc:.2f}"
    )
    x, _ = _shapes(n_probe + n_bg, size, seed=1)
    probes, background = x[:n_probe], x[n_probe:]
    target = _top_class(model, (probes,))
    return Case(
        f"cnn {size}px",
        model,
        (probes,),
        (background,),
        target,
        _image_floor(model, tuple(probes.shape[1:])),
        _image_captum(model, probes, background, target),
    )


def build_resnet(quick: bool) -> Case:
    import torchvision

    size, n_probe, n_bg = (32, 4, 8) if quick else (112, 16, 32)
    with _seeded(0):
        model = torchvision.models.resnet18(weights=None).eval()
    x, _ = _shapes(n_probe + n_bg, size, seed=1)
    probes, background = x[:n_probe], x[n_probe:]
    target = _top_class(model, (probes,))
    return Case(
        f"resnet18 {size}px",
        model,
        (probes,),
        (background,),
        target,
        _image_floor(model, tuple(probes.shape[1:])),
        _image_captum(model, probes, background, target),
        ladder=(64, 256),  # a ResNet-18 point costs ~50x a ShapesCNN point on one CPU thread
        ref_lattice=16,
    )


def build_bert(quick: bool) -> Case:
    from captum.attr import GradientShap
    from transformers import BertConfig, BertForSequenceClassification

    hidden, layers, length, n_probe, n_bg = (32, 1, 16, 4, 8) if quick else (128, 2, 64, 16, 32)
    config = BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        vocab_size=1000,
    )
    with _seeded(0):
        model = BertForSequenceClassification(config).eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 1000, (n_probe + n_bg, length), generator=gen)
    probes, background = ids[:n_probe], ids[n_probe:]
    mask = torch.ones_like(probes)
    target = _top_class(model, (probes, mask))
    embed = model.get_input_embeddings()
    with torch.no_grad():
        x_emb, bg_emb = embed(probes), embed(background)

    def floor(rows: int) -> None:
        e = torch.randn(MAX_BATCH, length, hidden)
        m = torch.ones(MAX_BATCH, length, dtype=torch.long)
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
        f"bert-2x{hidden} L{length}", model, (probes, mask), (background, None), target, floor, captum
    )


# --------------------------------------------------------------------------------------------- measuring
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Peak resident memory (MiB) above the RSS at entry, sampled every 2 ms."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    base, peak, stop = _rss(), [0], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out = [0.0]
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out[0] = max(0, max(peak[0], _rss()) - base) / 2**20


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, float, float]:
    """(result, cpu s, wall s, peak MiB): the fastest CPU time of ``repeats`` runs, memory of the first."""
    cpu, wall, result, mib = [], [], None, 0.0
    for i in range(repeats):
        with peak_rss() as peak:
            c0, w0 = time.process_time(), time.perf_counter()
            result = fn()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        if i == 0:
            mib = peak[0]
    best = int(np.argmin(cpu))
    return result, cpu[best], wall[best], mib


def pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


def relative(values: Tensor, ref: ShapResult) -> Tensor:
    gap = (ref.outputs - ref.base_values).double()
    return (values.flatten(1).sum(1).double() - gap).abs() / gap.abs().clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class Row:
    method: str
    points: float
    cpu: float
    wall: float
    rel: float
    corr: float
    mib: float


def run_case(
    case: Case, quick: bool, repeats: int, shap_ladder: list[int] | None = None
) -> tuple[list[Row], float, ShapResult]:
    n_bg = case.background[0].shape[0]
    ref_points = n_bg * (16 if quick else case.ref_lattice)
    ref = expected_gradients(
        case.model,
        case.inputs,
        case.background,
        case.target,
        nsamples=ref_points,
        max_batch=MAX_BATCH,
        generator=torch.Generator().manual_seed(12345),
    )
    floor_rows = 512 if quick else 2048
    floor_cpu = min(timed(lambda: case.floor_fn(floor_rows), 1)[1] for _ in range(3)) / floor_rows

    def ours(**kw: Any) -> Callable[[], tuple[Tensor, Tensor]]:
        def run() -> tuple[Tensor, Tensor]:
            r = expected_gradients(
                case.model, case.inputs, case.background, case.target, max_batch=MAX_BATCH, **kw
            )
            return r.values[0], r.nsamples.double()

        return run

    def shap(n: int) -> Callable[[], tuple[Tensor, Tensor]]:
        def run() -> tuple[Tensor, Tensor]:
            r = shap_gradient_reference(
                case.model, case.inputs, case.background, case.target, nsamples=n, max_batch=MAX_BATCH
            )
            return r.values[0], r.nsamples.double()

        return run

    def captum(n: int) -> Callable[[], tuple[Tensor, Tensor]]:
        return lambda: (case.captum(n), torch.full((case.target.shape[0],), float(n)))

    ladder = [16, 64] if quick else list(case.ladder)
    shap_ladder = shap_ladder or ladder
    adaptive: dict[str, Any] = {"nsamples": 2 * n_bg, "completeness_tol": TOL, "max_nsamples": ref_points}
    methods: list[tuple[str, Callable[[], tuple[Tensor, Tensor]]]] = []
    methods += [(f"ours stratified n={n}", ours(nsamples=n)) for n in ladder]
    methods += [(f"ours lattice n={ladder[1]}", ours(nsamples=ladder[1], sampling="lattice"))]
    methods += [(f"ours adaptive tol={TOL}", ours(**adaptive))]
    methods += [(f"ours adaptive lattice tol={TOL}", ours(**adaptive, sampling="lattice"))]
    methods += [(f"ours random n={n}", ours(nsamples=n, sampling="random")) for n in ladder[1:]]
    methods += [(f"shap.GradientExplainer n={n}", shap(n)) for n in shap_ladder]
    methods += [(f"captum GradientShap n={n}", captum(n)) for n in ladder]
    rows = []
    for name, fn in methods:
        np.random.seed(0)  # captum draws baselines from numpy's global RNG
        (values, points), cpu, wall, mib = timed(fn, repeats)
        rows.append(
            Row(
                name,
                points.mean().item(),
                cpu,
                wall,
                relative(values, ref).median().item(),
                pearson(values, ref.values[0]).median().item(),
                mib,
            )
        )
        print(f"  {case.name}: {name} done ({cpu:.1f} cpu s)", file=sys.stderr, flush=True)
    return rows, floor_cpu, ref


def key_line(case: Case, rows: list[Row]) -> str:
    good = [r for r in rows if r.rel <= TOL and r.corr >= 0.95]
    adaptive = next((r for r in rows if r.method.startswith("ours adaptive tol")), None)
    unfolded = next((r for r in rows if r.method.startswith("ours adaptive lattice")), None)
    fixed = min(
        (r for r in good if r.method.startswith("ours stratified")), key=lambda r: r.cpu, default=None
    )
    shap_rows = [r for r in rows if r.method.startswith("shap")]
    shap_ok = next((r for r in shap_rows if r in good), None)
    head = f"{case.name}: time to median rel err <= {TOL:.0%} and corr >= 0.95 -- "
    if adaptive is None or adaptive not in good:
        return head + "ours adaptive did not get there"
    line = head + f"ours adaptive (default sampling, no budget to tune) {adaptive.cpu:.2f} cpu s"
    if unfolded is not None and unfolded in good:
        line += f" (unfolded lattice {unfolded.cpu:.2f} s)"
    if fixed is not None:
        line += f", ours cheapest fixed budget of the ladder that does {fixed.cpu:.2f} s ({fixed.method})"
    if shap_ok is not None:
        ratio = shap_ok.cpu / adaptive.cpu
        line += f"; shap.GradientExplainer {shap_ok.cpu:.2f} s ({shap_ok.method}): {ratio:.1f}x"
        return line + (
            f" ours adaptive, {shap_ok.cpu / fixed.cpu:.1f}x ours fixed" if fixed is not None else ""
        )
    last = shap_rows[-1]
    n_needed = last.points * (last.rel / TOL) ** 2  # Monte Carlo: error ~ 1/sqrt(n)
    estimate = last.cpu * n_needed / last.points
    return line + (
        f"; shap.GradientExplainer not there at n={last.points:.0f} (rel err {last.rel:.3f}, "
        f"{last.cpu:.1f} s): > {last.cpu / adaptive.cpu:.1f}x ours adaptive measured, "
        f"~{estimate / adaptive.cpu:.0f}x estimated (n ~ {n_needed:.0f} at 1/sqrt(n))"
    )


def print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [HEADER, *table]) for i in range(len(HEADER))]
    print(" | ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="cnn,bert", help="comma-separated: cnn, bert, resnet18")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method, fastest CPU time kept")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    parser.add_argument(
        "--shap-ladder",
        default=None,
        help="nsamples for shap.GradientExplainer, e.g. 64,256,1024,4096 (default: the common ladder)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    builders = {"cnn": build_cnn, "bert": build_bert, "resnet18": build_resnet}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in builders]
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {list(builders)}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), "
        f"{args.repeats} run(s) per method, "
        f"load average at start (1 min): {load:.2f} on {os.cpu_count()} CPUs"
    )
    import captum.attr  # noqa: F401 - imported before timing, so that no method pays for an import
    import shap  # noqa: F401

    table, keys, notes = [], [], []
    for name in names:
        case = builders[name](args.quick)
        shap_ladder = [int(n) for n in args.shap_ladder.split(",")] if args.shap_ladder else None
        rows, floor_cpu, ref = run_case(case, args.quick, args.repeats, shap_ladder)
        notes.append(
            f"{case.name}: floor {floor_cpu * 1e3:.3f} cpu ms per point; reference median rel err "
            f"{ref.relative_error.median():.1e}"
        )
        for r in rows:
            table.append(
                (
                    case.name,
                    r.method,
                    f"{r.points:.0f}",
                    f"{r.cpu:.2f}",
                    f"{r.wall:.2f}",
                    f"{r.cpu / (floor_cpu * r.points * case.target.shape[0]):.2f}",
                    f"{r.rel:.4f}",
                    f"{r.corr:.4f}",
                    f"{r.mib:.0f}",
                )
            )
        keys.append(key_line(case, rows))
    print_table(table)
    for line in notes + keys:
        print(line)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
