"""Attribution speed: integrated gradients, LIME, occlusion and feature ablation against their peers and the floor.

    python benchmarks/attribution.py [--parts ig,lime,ablation] [--models cnn,resnet18,bert] [--threads 1]
                                     [--repeats 5] [--probes N] [--samples 1000] [--segments 50] [--quick]

Models: the trained models of ``benchmarks/shap.py`` (``_shap_cases.py``: trained here on synthetic data by fixed
recipes, weights cached under ``benchmarks/.cache/``, nothing downloaded): ShapesCNN at 32 px, a torchvision
ResNet-18 at 112 px, a 2-layer BERT (hidden 128, length 64) explained at its word embeddings. Their probes and
targets (the top class) are those of ``shap.py``; ``--probes`` caps their number.

Parts (every ratio is measured in this run, on the CPU):

* ``ig`` -- integrated gradients to a relative completeness error |sum(phi) - (f(x) - f(0))| / |f(x) - f(0)| of 1%,
  baseline zeros (BERT: zero embeddings). Ours: ``attribute(..., "integrated_gradients", completeness_tol=0.01,
  max_steps=1024)`` (adaptive, every probe to 1%) and the same with ``completeness_stop="median"`` (the rounds
  end when the median probe is within 1%); captum's ``IntegratedGradients`` (Gauss-Legendre) through the same
  ``attribute`` call with ``n_steps`` = 8, 16, 32, ... (x2) until every probe is within 1% or the model's cap.
  64 rows per forward+backward for both. Ours runs before and after the ladder (fastest CPU time kept). The key
  ratios, each on one criterion for both engines: captum's CPU time to median <= 1% -- the run at the first rung
  that gets there, and the whole ladder up to it (what raising ``n_steps`` by hand costs) -- over ours stopping
  at the median; captum's to every probe <= 1% over ours stopping when every probe is.
* ``lime`` -- LIME on the CNN's probes: ours (``lime``, one call for every probe, ``alpha=0``: the ``lime`` explainer's weighted least squares) against the ``lime`` package's
  ``LimeImageExplainer().explain_instance`` (one call per probe, its classifier returns softmax probabilities),
  at the same ``n_samples`` (1000) and the same SLIC superpixels (its ``segmentation_fn`` is ours, so both pay for
  SLIC), 128 rows per forward, and the floor: the model's forwards alone on as many rows in batches of 128.
  Stability: the IoU of the top 10% pixels between seeds 0 and 1, 2 and 3, 4 and 5 (``SEED_PAIRS``), per probe and
  pair (median and mean over them: one pair of 16 probes moved the median by ~0.03 between runs).
* ``ablation`` -- occlusion and feature ablation with the default windows and patches against the floor of one
  batched forward per perturbation: the model alone on (perturbations x probes) rows in batches of 128. Ours:
  ``attribute(..., "occlusion")`` (our batched loop, ``functional/attribution/_ablate.py``, equal to captum's
  ``Occlusion`` / ``FeatureAblation`` to 1e-5 in ``tests/functional/test_ablate.py``: 128 rows per forward, f(x) and
  f(baseline) 2 more rows per probe in its batches); the peer: captum's ``Occlusion`` / ``FeatureAblation`` on the
  same inputs, windows and masks (BERT: at its word embeddings), ``perturbations_per_eval`` = 128 / probes (its
  f(x) a forward of its own). Before our loop, ``attribute`` ran captum's plus 3 forwards of the probes (captum's
  f(x), ours, f(baseline)): 1.12-1.29x on BERT embeddings; captum's loop alone is timed here to show where ours stands.

Columns: cpu s = process CPU seconds (1 torch thread by default: on a shared machine CPU time moves less than wall
time), fastest of ``--repeats`` for LIME and ablation (interleaved with the floor); wall s; peak MiB = the peak
resident memory above the RSS before the call, in an extra untimed run with glibc handing freed blocks back at once
(``_measure.peak_live``: the high-water mark of live allocations -- model activations, autograd buffers, expanded
inputs, our row store, numpy arrays -- not of a heap that kept freed blocks). The integrated-gradients numbers (a
target) are measured in a fresh process each (imports, model, one warm-up call, the call; ``--quick``: in this
process), LIME's and the ablations' in this process. ``tracemalloc`` would not see torch's allocator; on CUDA
``torch.cuda.max_memory_allocated`` would be the number, but this script runs on the CPU.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import peak_live, pin_allocator, timed
from benchmarks._shap_cases import build_bert, build_cnn, build_resnet, use_cache
from lightning_xai.functional.attribution import (
    ablation_mask,
    attribute,
    lime,
    occlusion_window,
    superpixels,
)

TOL = 0.01
IG_BATCH = 64  # rows per forward+backward of both integrated-gradients engines (as benchmarks/shap.py)
BATCH = 128  # rows per forward of LIME and of the ablations (the default max_batch)
Table = list[tuple[str, ...]]


@dataclass
class Model:
    name: str
    model: nn.Module
    inputs: tuple[Tensor, ...]
    target: Tensor
    forward_fn: Callable[..., Any] | None
    cap: int  # largest n_steps of captum's ladder


def _logits(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    return model(input_ids=ids, attention_mask=mask).logits


PROBES = {"cnn": 16, "resnet18": 8, "bert": 16}  # a ResNet-18 row at 112 px costs ~30x a ShapesCNN row
ABLATION_PROBES = 4  # of the ResNet: 225 occlusion windows x 4 probes = 900 rows per run


def build(name: str, quick: bool, probes: int | None) -> Model:
    case = {"cnn": build_cnn, "resnet18": build_resnet, "bert": build_bert}[name](quick)
    n = min(probes or PROBES[name], case.target.shape[0])
    inputs = tuple(x[:n] for x in case.inputs)
    forward = _logits if name == "bert" else None
    cap = 32 if quick else {"cnn": 1024, "resnet18": 256, "bert": 1024}[name]
    return Model(case.name.split(" (")[0], case.model.requires_grad_(False), inputs, case.target[:n], forward, cap)


def quiet(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return run


def print_table(title: str, header: tuple[str, ...], rows: Table) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n== {title}")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


# ------------------------------------------------------------------------------------- integrated gradients
IG_HEADER = ("model", "engine", "steps/probe", "cpu s", "wall s", "rel err median", "rel err max", "<= 1%",
             "peak MiB")


ADAPTIVE = {"completeness_tol": TOL, "max_steps": 1024}
MEDIAN = {**ADAPTIVE, "completeness_stop": "median"}  # stop as soon as the median probe meets TOL


def ig_call(m: Model, **kw: Any) -> Callable[[], Any]:
    return quiet(lambda: attribute(m.model, m.inputs, m.target, "integrated_gradients", forward_fn=m.forward_fn,
                                   max_batch=IG_BATCH, **kw))


def ig_peak(m: Model, n_steps: int | None) -> float:
    """Peak MiB of ours (``n_steps=None``; ``0``: stopping at the median) or captum at ``n_steps``, in this process
    (after a warm-up call)."""
    ig_call(m, n_steps=4)()
    call = ig_call(m, **ADAPTIVE) if n_steps is None else ig_call(m, **MEDIAN) if n_steps == 0 else \
        ig_call(m, n_steps=n_steps)
    return peak_live(call)


def fresh_peak(name: str, n_steps: int | None, args: argparse.Namespace) -> float:
    """:func:`ig_peak` in a fresh Python process (imports, the model, a warm-up call, the measured call): no
    history of this run in it (in this process, after the ResNet, the same BERT call read ~30 MiB more)."""
    engine = "ours" if n_steps is None else "median" if n_steps == 0 else str(n_steps)
    cmd = [sys.executable, __file__, "--memory-of", f"{name}:{engine}", "--threads", str(args.threads)]
    if args.probes:
        cmd += ["--probes", str(args.probes)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
    return float(next(line for line in reversed(out) if line.startswith("peak MiB ")).split()[-1])


def integrated_gradients(m: Model, peak: Callable[[int | None], float], summary: Table) -> Table:
    run = functools.partial(ig_call, m)
    b = m.target.shape[0]
    run(n_steps=4)()  # warm-up (first-call allocations, captum's imports)
    ours, cpu, wall, _ = timed(run(**ADAPTIVE), 1)
    median, mcpu, mwall, _ = timed(run(**MEDIAN), 1)
    print(f"  {m.name}: ours {cpu:.2f} cpu s (every probe), {mcpu:.2f} (median)", file=sys.stderr, flush=True)
    rungs: list[tuple[int, Any, float, float]] = []
    n = 8
    while n <= m.cap:
        result, c, w, _ = timed(run(n_steps=n), 1)
        rungs.append((n, result, c, w))
        print(f"  {m.name}: captum n_steps={n} {c:.2f} cpu s", file=sys.stderr, flush=True)
        if float(result.relative_error.max()) <= TOL:
            break
        n *= 2
    _, again, again_wall, _ = timed(run(**ADAPTIVE), 1)  # after the ladder too: the same load for both
    if again < cpu:
        cpu, wall = again, again_wall
    _, again, again_wall, _ = timed(run(**MEDIAN), 1)
    if again < mcpu:
        mcpu, mwall = again, again_wall
    hits = {label: next((i for i, rung in enumerate(rungs) if float(stat(rung[1].relative_error)) <= TOL), None)
            for label, stat in (("median", torch.median), ("every probe", torch.max))}
    mib = {-1: peak(None), -2: peak(0)}  # memory: untimed runs of ours and of captum's rung at median <= 1%
    if hits["median"] is not None:
        mib[hits["median"]] = peak(rungs[hits["median"]][0])

    def row(engine: str, steps: float, c: float, w: float, r: Any, index: int) -> tuple[str, ...]:
        rel = r.relative_error
        return (m.name, engine, f"{steps:.0f}", f"{c:.2f}", f"{w:.2f}", f"{float(rel.median()):.4f}",
                f"{float(rel.max()):.4f}", f"{int((rel <= TOL).sum())}/{b}",
                f"{mib[index]:.0f}" if index in mib else "-")

    steps = float(ours.n_steps_used.double().mean()) + 2  # + f(x), f(baseline): forward only
    msteps = float(median.n_steps_used.double().mean()) + 2
    table = [row(f"ours completeness_tol={TOL}", steps, cpu, wall, ours, -1),
             row(f"ours completeness_tol={TOL}, stop=median", msteps, mcpu, mwall, median, -2)]
    table += [row(f"captum n_steps={n}", n, c, w, r, i) for i, (n, r, c, w) in enumerate(rungs)]
    ladder = np.cumsum([c for _, _, c, _ in rungs])
    for label, hit in hits.items():
        stat = torch.median if label == "median" else torch.max
        # the same criterion for both: ours stopping at the median against captum's rung judged by its median
        mine, mine_cpu = (median, mcpu) if label == "median" else (ours, cpu)
        name = f"IG {m.name}: time to {label} rel err <= 1%, captum / ours (target >= 3x)"
        if hit is None or float(stat(mine.relative_error)) > TOL:
            who = "captum did not reach it" if hit is None else "ours did not reach it"
            summary.append((name, f"{who} (captum cap n_steps={m.cap})", "-"))
            continue
        n, c = rungs[hit][0], rungs[hit][2]
        one, whole = c / mine_cpu, ladder[hit] / mine_cpu
        summary.append((name, f"{one:.2f}x (captum n_steps={n}); {whole:.2f}x with its ladder 8..{n}",
                        "yes" if one >= 3 else "ladder only" if whole >= 3 else "no"))
        if label == "median":
            summary.append((f"IG {m.name}: peak MiB, ours (median stop) vs captum n_steps={n} (target <=)",
                            f"{mib[-2]:.0f} vs {mib[hit]:.0f}", "yes" if round(mib[-2]) <= round(mib[hit]) else "no"))
    return table


# -------------------------------------------------------------------------------------------------- LIME
LIME_HEADER = ("model", "engine", "samples", "superpixels", "cpu s", "wall s", "x floor", "IoU median", "IoU mean",
               "peak MiB")


SEED_PAIRS = ((0, 1), (2, 3), (4, 5))  # LIME's stability: the maps of each pair of seeds compared


def _iou(a: Tensor, b: Tensor) -> float:
    """IoU of the top 10% pixels of two maps."""
    k = max(1, a.numel() // 10)
    ta, tb = set(a.flatten().topk(k).indices.tolist()), set(b.flatten().topk(k).indices.tolist())
    return len(ta & tb) / len(ta | tb)


def lime_images(m: Model, n_samples: int, n_segments: int, repeats: int, summary: Table) -> Table:
    from lime import lime_image
    from lime.lime_image import LimeImageExplainer

    lime_image.tqdm = lambda rows, **_: rows  # its progress bar
    model, x, target = m.model, m.inputs[0], m.target
    b = x.shape[0]

    def ours(seed: int) -> Tensor:
        return lime(model, x, target, n_samples=n_samples, n_segments=n_segments, max_batch=BATCH, alpha=0.0,
                    generator=torch.Generator().manual_seed(seed)).values[0].sum(1)  # alpha: the explainer's default

    def classify(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            batch = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()  # NCHW, as ours
            return model(batch).softmax(-1).numpy()

    def one(i: int, seed: int) -> Tensor:
        label = int(target[i])
        segments = superpixels(x[i:i + 1], n_segments)[0].numpy()  # our SLIC superpixels, inside the timed call
        explanation = LimeImageExplainer(random_state=seed).explain_instance(
            x[i].permute(1, 2, 0).double().numpy(), classify, labels=(label,), top_labels=None, hide_color=0,
            num_samples=n_samples, batch_size=BATCH, segmentation_fn=lambda _: segments)
        weights = dict(explanation.local_exp[label])
        return torch.tensor(np.vectorize(lambda s: weights.get(s, 0.0))(segments), dtype=torch.float32)

    def package(seed: int) -> Tensor:
        return torch.stack([one(i, seed) for i in range(b)])

    copies = x.repeat_interleave(BATCH // b + 1, 0)[:BATCH].contiguous()

    def floor() -> None:
        with torch.no_grad():
            for start in range(0, b * n_samples, BATCH):
                model(copies[:min(BATCH, b * n_samples - start)])

    engines = {"floor (forwards only)": floor, "ours lime": lambda: ours(0), "lime LimeImageExplainer": lambda: package(0)}
    best: dict[str, list[float]] = {k: [math.inf, math.inf, 0.0] for k in engines}
    maps: dict[str, list[Tensor]] = {"ours lime": [], "lime LimeImageExplainer": []}
    for r in range(repeats):
        for name, fn in engines.items():
            out, cpu, wall, _ = timed(quiet(fn), 1)
            if cpu < best[name][0]:
                best[name][:2] = [cpu, wall]
            if r == 0 and name in maps:
                maps[name].append(out)
        print(f"  lime: repeat {r + 1} done", file=sys.stderr, flush=True)
    for name, fn in engines.items():
        best[name][2] = peak_live(quiet(fn))
    pairs: dict[str, list[tuple[Tensor, Tensor]]] = {k: [] for k in maps}
    for first, second in SEED_PAIRS:
        for name, make in (("ours lime", ours), ("lime LimeImageExplainer", package)):
            a = maps[name][0] if first == 0 else quiet(lambda: make(first))()
            pairs[name].append((a, quiet(lambda: make(second))()))
    count = int(superpixels(x, n_segments).flatten(1).amax(1).double().add(1).median())
    table = []
    ious: dict[str, list[float]] = {}
    for name, (cpu, wall, mib) in best.items():
        iou = ["-", "-"]
        if name in maps:
            ious[name] = [_iou(a, c) for one, two in pairs[name] for a, c in zip(one, two)]
            iou = [f"{np.median(ious[name]):.3f}", f"{np.mean(ious[name]):.3f}"]
        table.append((m.name, name, str(n_samples), f"{count} (median)", f"{cpu:.2f}", f"{wall:.2f}",
                      f"{cpu / best['floor (forwards only)'][0]:.2f}", *iou, f"{mib:.0f}"))
    ours_s, peer_s, floor_s = best["ours lime"][0], best["lime LimeImageExplainer"][0], best["floor (forwards only)"][0]
    speed = peer_s / ours_s
    summary.append((f"LIME {m.name}: time, lime package / ours (target >= 5x)",
                    (f"{speed:.2f}x (ours {ours_s / floor_s:.2f}x the floor, the package {peer_s / floor_s:.2f}x: "
                     f"at most {peer_s / floor_s:.2f}x possible)"), "yes" if speed >= 5 else "no"))
    mine, theirs = (float(np.median(ious[k])) for k in ("ours lime", "lime LimeImageExplainer"))
    summary.append((f"LIME {m.name}: top-10% IoU between seeds (3 pairs), ours vs package (target >=)",
                    (f"median {mine:.3f} vs {theirs:.3f}; mean {np.mean(ious['ours lime']):.3f} vs "
                     f"{np.mean(ious['lime LimeImageExplainer']):.3f}"), "yes" if mine >= theirs else "no"))
    return table


# ---------------------------------------------------------------------------------- occlusion and ablation
ABLATION_HEADER = ("model", "method", "engine", "perturbations", "rows/forward", "cpu s", "floor cpu s", "x floor",
                   "wall s", "peak MiB")


def perturbations(m: Model, method: str) -> int:
    """Occlusion windows (captum's count: ceil((n - window) / stride) + 1 per dim) or ablation features."""
    x = m.inputs[0]
    if m.forward_fn is not None:  # tokens: one per position
        return x.shape[1]
    shape = tuple(x.shape[1:])
    if method == "feature_ablation":
        return int(ablation_mask(shape, "image").max()) + 1
    window, stride = occlusion_window(shape, "image")
    return math.prod(math.ceil((n - w) / s) + 1 for n, w, s in zip(shape, window, stride))


def _forwards(m: Model, count: int, per_eval: int) -> Callable[[], None]:
    """The floor: the model alone on ``count`` x probes rows, ``per_eval`` x probes rows per forward."""
    b = m.target.shape[0]
    copies = tuple(t.repeat(per_eval, *([1] * (t.dim() - 1))) for t in m.inputs)

    def run() -> None:
        with torch.no_grad():
            for start in range(0, count, per_eval):
                part = tuple(t[:min(per_eval, count - start) * b] for t in copies)
                m.model(*part) if m.forward_fn is None else m.forward_fn(m.model, *part)

    return run


def _captum_ablation(m: Model, method: str, per_eval: int) -> Callable[[], Any]:
    """Captum's ``Occlusion`` / ``FeatureAblation`` on ``m`` with our default windows and masks (BERT: at its word
    embeddings, the attention mask passed through), ``per_eval`` perturbations per forward."""
    from captum.attr import FeatureAblation, Occlusion

    x, extra, forward = m.inputs[0], None, m.model
    if m.forward_fn is not None:
        with torch.no_grad():
            x = m.model.get_input_embeddings()(m.inputs[0])
        extra = (m.inputs[1],)

        def forward(emb: Tensor, attention_mask: Tensor) -> Tensor:  # type: ignore[misc]
            return m.model(inputs_embeds=emb, attention_mask=attention_mask).logits

    shape = tuple(x.shape[1:])
    kind = "tokens" if m.forward_fn is not None else "image"
    kw = {"target": m.target, "additional_forward_args": extra, "perturbations_per_eval": per_eval}
    if method == "occlusion":
        window, stride = occlusion_window(shape, kind)
        return lambda: Occlusion(forward).attribute(x, window, strides=stride, baselines=0.0, **kw)
    return lambda: FeatureAblation(forward).attribute(x, baselines=0.0, feature_mask=ablation_mask(shape, kind), **kw)


def ablations(m: Model, repeats: int, summary: Table) -> Table:
    if m.name.startswith("resnet"):
        n = min(ABLATION_PROBES, m.target.shape[0])
        m = Model(m.name, m.model, tuple(x[:n] for x in m.inputs), m.target[:n], m.forward_fn, m.cap)
    b = m.target.shape[0]
    per_eval = max(1, BATCH // b)  # perturbations per forward of the floor and of captum
    table = []
    for method in ("occlusion", "feature_ablation"):
        count = perturbations(m, method)
        engines = {"floor": _forwards(m, count, per_eval), "captum": _captum_ablation(m, method, per_eval),
                   "ours": functools.partial(attribute, m.model, m.inputs, m.target, method, forward_fn=m.forward_fn,
                                             max_batch=BATCH)}
        for fn in engines.values():
            quiet(fn)()  # warm-up
        best = {name: [math.inf, math.inf, 0.0] for name in engines}
        for _ in range(repeats):
            for name, fn in engines.items():
                _, cpu, wall, _ = timed(quiet(fn), 1)
                if cpu < best[name][0]:
                    best[name][:2] = [cpu, wall]
        for name in ("ours", "captum"):
            best[name][2] = peak_live(quiet(engines[name]))
        for name in ("ours", "captum"):
            cpu, wall, mib = best[name]
            table.append((m.name, method, name, str(count), str(per_eval * b), f"{cpu:.2f}",
                          f"{best['floor'][0]:.2f}", f"{cpu / best['floor'][0]:.2f}", f"{wall:.2f}", f"{mib:.0f}"))
        ratio, peer = (best[name][0] / best["floor"][0] for name in ("ours", "captum"))
        summary.append((f"{method} {m.name}: ours / floor of one batched forward per perturbation (target <= 1.1x)",
                        f"{ratio:.2f}x ({count} x {b} rows + {2 * b} for f(x), f(baseline); captum {peer:.2f}x)",
                        "yes" if round(ratio, 2) <= 1.1 else "no"))
        print(f"  {m.name}: {method} done", file=sys.stderr, flush=True)
    return table


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", default="ig,lime,ablation", help="comma-separated: ig, lime, ablation")
    parser.add_argument("--models", default=None, help="comma-separated: cnn, resnet18, bert (default all three; "
                        "with --quick cnn,bert)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="ablation: runs of the floor, captum and ours, interleaved, fastest CPU kept (LIME: at "
                        "most 3)")
    parser.add_argument("--probes", type=int, default=None,
                        help="probes per model (default: 16, the ResNet 8; at most shap.py's 16)")
    parser.add_argument("--samples", type=int, default=1000, help="LIME samples per probe")
    parser.add_argument("--segments", type=int, default=50, help="LIME: SLIC n_segments")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # model:ours|n_steps, see fresh_peak
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tiny models (no disk cache), 2 probes, 64 LIME samples, one repeat")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    models = args.models or ("cnn,bert" if args.quick else "cnn,resnet18,bert")
    names = [m.strip() for m in models.split(",") if m.strip()]
    for given, known, flag in ((parts, ("ig", "lime", "ablation"), "--parts"),
                               (names, ("cnn", "resnet18", "bert"), "--models")):
        if unknown := [g for g in given if g not in known]:
            parser.error(f"unknown {flag} {unknown}; choose from {list(known)}")
    if args.quick:
        args.probes, args.samples, args.repeats = min(args.probes or 2, 2), min(args.samples, 64), 1
    torch.set_num_threads(args.threads)
    use_cache(not args.quick)
    allocator = pin_allocator()
    if args.memory_of:  # a child of fresh_peak
        name, engine = args.memory_of.split(":")
        n_steps = None if engine == "ours" else 0 if engine == "median" else int(engine)
        print(f"peak MiB {ig_peak(build(name, False, args.probes), n_steps):.3f}")
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} thread(s), {allocator}, "
          f"load average at start (1 min): {load:.2f} on {os.cpu_count()} CPUs")
    import captum.attr  # noqa: F401 - imported before timing, so that no engine pays for an import

    start = time.perf_counter()
    summary: Table = []
    tables: dict[str, Table] = {"ig": [], "lime": [], "ablation": []}
    for name in names:
        m = build(name, args.quick, args.probes)
        if "ig" in parts:
            peak = functools.partial(ig_peak, m) if args.quick else functools.partial(fresh_peak, name, args=args)
            tables["ig"] += integrated_gradients(m, peak, summary)
        if "lime" in parts and name == "cnn":
            tables["lime"] += lime_images(m, args.samples, args.segments, min(args.repeats, 3), summary)
        if "ablation" in parts:
            tables["ablation"] += ablations(m, args.repeats, summary)
    titles = {"ig": ("integrated gradients to 1% relative completeness error", IG_HEADER),
              "lime": ("LIME on images", LIME_HEADER),
              "ablation": ("occlusion and feature ablation against the floor", ABLATION_HEADER)}
    for part, rows in tables.items():
        if rows:
            print_table(titles[part][0], titles[part][1], rows)
    print_table("targets", ("target", "measured", "met"), summary)
    if hasattr(os, "getloadavg"):
        print(f"load average at the end (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"total wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
