"""SHAP by expected gradients: time to an accurate answer, lightning_xai against shap and captum.

    python benchmarks/shap.py [--models cnn,resnet18,bert] [--threads 1] [--repeats 1] [--quick]

Models (trained here on synthetic data, weights cached under ``benchmarks/.cache/``; see ``_shap_cases.py``):
``cnn`` -- ShapesCNN on SyntheticShapes 32 px; ``resnet18`` -- torchvision ResNet-18 at 112 px on
SyntheticShapes; ``bert`` -- a 2-layer BERT (hidden 128) trained on a keyword task at length 64, explained at
its word embeddings. 16 probes, a background of 32, the top class, 64 rows per model call for every method.

Methods: ours ``expected_gradients`` with adaptive rounds to ``completeness_tol=0.01`` (from 64 points per
probe; default ``sampling="stratified"`` and ``"lattice"``), ours at fixed budgets (``"stratified"``,
``"lattice"``, ``"random"`` = plain Monte Carlo), shap's ``GradientExplainer`` (through
``shap_gradient_reference``: the explainer itself, one ``shap_values`` call per probe) and captum's
``GradientShap`` (``n_samples`` split into calls of at most 256 rows), each on a ladder of nsamples (x4 from
64) that stops at the first rung meeting the accuracy criteria below, or at the model's cap (shap: 4096,
1024 for the ResNet; captum: 4096 for the CNN, 1024 for the BERT, 64 for the ResNet -- a ResNet-18 point costs
~25 ms on one thread). The run pins glibc's mmap/trim thresholds (see ``pin_allocator``) and takes ~17
minutes with the weights and references cached (~28 the first time: training, references).

Columns: points = gradient points (forward+backward rows) per probe, re-evaluated rows included; cpu s =
process CPU seconds (1 torch thread by default) and wall s; x floor = cpu s over points x the floor's cost per
point, the floor being one batched forward+backward (64 rows per call, parameters frozen) measured right
before and right after the method (the mean of the two, so that a change of load on a shared machine hits
both); rel err = median over probes of |sum(phi) - (f(x) - E f(background))| / |f(x) - E f(background)|;
corr = median per-probe Pearson correlation with the reference (ours with adaptive rounds to a 10x tighter
tolerance, another seed; cached; its own completeness is printed); peak MiB = peak resident memory above the
RSS before the call (the kernel's high-water mark, reset after ``malloc_trim``; the whole process, model
activations included).

The key line per model: CPU time to reach median rel err <= 1% and median corr >= 0.95 for ours with adaptive
rounds (no budget to tune), against the cheapest rung of shap's ladder that gets there -- or, if none does
within the cap, a lower bound from its largest rung and an estimate from Monte Carlo's 1/sqrt(n) rate.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

# This file is called shap.py: keep its folder off the path so that `import shap` finds the library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import pin_allocator, timed
from benchmarks._shap_cases import (
    MAX_BATCH,
    Case,
    build_bert,
    build_cnn,
    build_resnet,
    cached,
    use_cache,
)
from lightning_xai.functional.shap import _engine as _shap_engine
from lightning_xai.functional.shap import expected_gradients, shap_gradient_reference

HEADER = ("model", "method", "points", "cpu s", "wall s", "x floor", "rel err", "corr", "peak MiB")
TOL = 0.01
MIN_CORR = 0.95
REF_TOL = 0.001


# --------------------------------------------------------------------------------------------- measuring
def pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class Row:
    method: str
    points: float
    cpu: float
    wall: float
    floor: float  # cpu s per point of the floor around this method
    rel: float
    corr: float
    mib: float

    def good(self) -> bool:
        return self.rel <= TOL and self.corr >= MIN_CORR


@dataclass
class Reference:
    values: Tensor
    gap: Tensor  # f(x) - E f(background)
    rel: Tensor
    points: Tensor


def reference(case: Case, quick: bool) -> Reference:
    """Ours with adaptive rounds to ``REF_TOL``, another seed; cached by model recipe and engine source."""
    settings = {
        "tol": REF_TOL,
        "nsamples": 2 * case.background[0].shape[0],
        "max": case.ref_max,
        "seed": 12345,
    }
    folder = Path(_shap_engine.__file__).parent  # the engine and the modules it is made of
    source = b"".join((folder / f"{m}.py").read_bytes() for m in ("_engine", "_rows", "_cells"))
    engine = hashlib.sha256(source).hexdigest()[:16]

    def make() -> dict[str, Tensor]:
        start = time.process_time()
        r = expected_gradients(
            case.model,
            case.inputs,
            case.background,
            case.target,
            nsamples=settings["nsamples"],
            completeness_tol=REF_TOL,
            max_nsamples=settings["max"],
            max_batch=MAX_BATCH,
            generator=torch.Generator().manual_seed(settings["seed"]),
        )
        print(f"{case.name}: reference computed in {time.process_time() - start:.0f} cpu s", file=sys.stderr)
        return {
            "values": r.values[0],
            "gap": r.outputs - r.base_values,
            "rel": r.relative_error,
            "points": r.nsamples,
        }

    key = {"case": case.recipe, "name": case.name, "ref": settings, "engine": engine, "quick": quick}
    saved = cached(f"reference-{case.name.split()[0]}", key, make)
    return Reference(saved["values"], saved["gap"].double(), saved["rel"], saved["points"])


class Runner:
    """Runs methods, each between two floor runs of about half its rows each (capped), so that the floor and
    the method see the same load on a shared machine; keeps the rows."""

    def __init__(self, case: Case, ref: Reference, repeats: int, floor_cap: int) -> None:
        self.case, self.ref, self.repeats, self.floor_cap = case, ref, repeats, floor_cap
        self.rows: list[Row] = []

    def _floor(self, rows: int) -> float:
        # timed like the methods (after malloc_trim: both pay the same first touch of fresh pages)
        return timed(lambda: self.case.floor_fn(rows), 1)[1]

    def run(self, name: str, fn: Callable[[], tuple[Tensor, Tensor]], rows_hint: int) -> Row:
        half = int(min(self.floor_cap, max(MAX_BATCH, rows_hint // 2)))
        before = self._floor(half)
        np.random.seed(0)  # captum draws baselines from numpy's global RNG
        (values, points), cpu, wall, mib = timed(fn, self.repeats)
        after = self._floor(half)
        rel = (values.flatten(1).sum(1).double() - self.ref.gap).abs() / self.ref.gap.abs().clamp_min(1e-12)
        row = Row(
            name,
            points.double().mean().item(),
            cpu,
            wall,
            (before + after) / (2 * half),
            rel.median().item(),
            pearson(values, self.ref.values).median().item(),
            mib,
        )
        self.rows.append(row)
        print(f"  {self.case.name}: {name} done ({cpu:.1f} cpu s)", file=sys.stderr, flush=True)
        return row


def run_case(
    case: Case, quick: bool, repeats: int, shap_ladder: list[int] | None
) -> tuple[Runner, Reference]:
    ref = reference(case, quick)
    n_probe = case.target.shape[0]
    runner = Runner(case, ref, repeats, case.floor_rows if not quick else 128)
    b = n_probe

    def ours(**kw: Any) -> Callable[[], tuple[Tensor, Tensor]]:
        def run() -> tuple[Tensor, Tensor]:
            r = expected_gradients(
                case.model, case.inputs, case.background, case.target, max_batch=MAX_BATCH, **kw
            )
            return r.values[0], r.nsamples

        return run

    def shap(n: int) -> Callable[[], tuple[Tensor, Tensor]]:
        def run() -> tuple[Tensor, Tensor]:
            r = shap_gradient_reference(
                case.model, case.inputs, case.background, case.target, nsamples=n, max_batch=MAX_BATCH
            )
            return r.values[0], r.nsamples

        return run

    def captum(n: int) -> Callable[[], tuple[Tensor, Tensor]]:
        return lambda: (case.captum(n), torch.full((n_probe,), float(n)))

    n_bg = case.background[0].shape[0]
    adaptive: dict[str, Any] = {
        "nsamples": 2 * n_bg,
        "completeness_tol": TOL,
        "max_nsamples": case.max_nsamples,
    }
    runner.run(f"ours adaptive tol={TOL}", ours(**adaptive), 4 * b * adaptive["nsamples"])
    if case.extra_methods:
        runner.run(f"ours adaptive lattice tol={TOL}", ours(**adaptive, sampling="lattice"), 4 * b * 2 * n_bg)
    ladder = [16, 64] if quick else list(case.ladder)
    for n in ladder:
        runner.run(f"ours stratified n={n}", ours(nsamples=n), b * n)
    if case.extra_methods:
        middle, top = ladder[len(ladder) // 2], ladder[-1]
        runner.run(f"ours lattice n={middle}", ours(nsamples=middle, sampling="lattice"), b * middle)
        runner.run(f"ours random n={top}", ours(nsamples=top, sampling="random"), b * top)
    peers = [
        ("shap.GradientExplainer", shap, shap_ladder, case.shap_cap),
        ("captum GradientShap", captum, None, case.captum_cap),
    ]
    for label, make, rungs, cap in peers:
        for n in rungs or _ladder(64 if quick else cap):
            if runner.run(f"{label} n={n}", make(n), b * n).good():
                break
    return runner, ref


def _ladder(cap: int) -> list[int]:
    out, n = [], 64
    while n < cap:
        out.append(n)
        n *= 4
    return [*out, cap]


# ------------------------------------------------------------------------------------------- reporting
def key_lines(case: Case, rows: list[Row]) -> list[str]:
    adaptive = next(r for r in rows if r.method.startswith("ours adaptive tol"))
    head = f"{case.name}: time to median rel err <= {TOL:.0%} and corr >= {MIN_CORR} -- "
    if not adaptive.good():
        return [
            head
            + f"ours adaptive did not get there (rel err {adaptive.rel:.4f}, corr {adaptive.corr:.3f} at "
            f"{adaptive.points:.0f} points, {adaptive.cpu:.2f} cpu s)"
        ]
    lines = []
    for label in ("shap.GradientExplainer", "captum GradientShap"):
        peer = [r for r in rows if r.method.startswith(label)]
        if not peer:
            continue
        line = (
            head
            + f"ours adaptive {adaptive.cpu:.2f} cpu s ({adaptive.points:.0f} points, {adaptive.mib:.0f} MiB)"
        )
        ok = next((r for r in peer if r.good()), None)
        if ok is not None:
            line += (
                f"; {label} {ok.cpu:.2f} s ({ok.method.split()[-1]}, {ok.mib:.0f} MiB): "
                f"**{ok.cpu / adaptive.cpu:.1f}x** ours"
            )
        else:
            last = peer[-1]
            n_needed = last.points * (last.rel / TOL) ** 2  # Monte Carlo: error ~ 1/sqrt(n)
            estimate = last.cpu * n_needed / last.points
            line += (
                f"; {label} not there at n={last.points:.0f} (rel err {last.rel:.3f}, corr {last.corr:.3f}, "
                f"{last.cpu:.1f} s, {last.mib:.0f} MiB): > {last.cpu / adaptive.cpu:.1f}x ours measured, "
                f"~{estimate / adaptive.cpu:.0f}x estimated (n ~ {n_needed:.0f} at 1/sqrt(n))"
            )
        lines.append(line)
    return lines


def print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [HEADER, *table]) for i in range(len(HEADER))]
    print(" | ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in table:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet18,bert", help="comma-separated: cnn, resnet18, bert")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method, fastest CPU time kept")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no disk cache: a smoke run")
    parser.add_argument(
        "--shap-ladder",
        default=None,
        help="shap.GradientExplainer nsamples, e.g. 64,256,1024 (default: x4 steps to the model cap)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    builders = {"cnn": build_cnn, "resnet18": build_resnet, "bert": build_bert}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in builders]
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {list(builders)}")
    use_cache(not args.quick)
    allocator = pin_allocator()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), "
        f"{args.repeats} run(s) per method, {allocator}, "
        f"load average at start (1 min): {load:.2f} on {os.cpu_count()} CPUs"
    )
    import captum.attr  # noqa: F401 - imported before timing, so that no method pays for an import
    import shap  # noqa: F401

    start = time.perf_counter()
    table, keys, notes = [], [], []
    shap_ladder = [int(n) for n in args.shap_ladder.split(",")] if args.shap_ladder else None
    for name in names:
        case = builders[name](args.quick)
        runner, ref = run_case(case, args.quick, args.repeats, shap_ladder)
        floors = [r.floor for r in runner.rows]
        notes.append(
            f"{case.name}: floor {np.median(floors) * 1e3:.3f} cpu ms per point (range "
            f"{min(floors) * 1e3:.3f}-{max(floors) * 1e3:.3f} over the run); "
            f"reference {ref.points.float().mean():.0f} "
            f"points per probe, rel err median {ref.rel.median():.1e}, max {ref.rel.max():.1e}"
        )
        for r in runner.rows:
            table.append(
                (
                    case.name,
                    r.method,
                    f"{r.points:.0f}",
                    f"{r.cpu:.2f}",
                    f"{r.wall:.2f}",
                    f"{r.cpu / (r.floor * r.points * case.target.shape[0]):.2f}",
                    f"{r.rel:.4f}",
                    f"{r.corr:.4f}",
                    f"{r.mib:.0f}",
                )
            )
        keys += key_lines(case, runner.rows)
    print_table(table)
    for line in notes + keys:
        print(line)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
