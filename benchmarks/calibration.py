"""Streaming calibration: lightning_xai's fixed-size bins against torchmetrics' stored confidences.

    python benchmarks/calibration.py [--threads 1] [--repeats 1] [--quick] [--no-paired]

1,000,000 multiclass predictions (100 classes) arrive in batches of 512. Each batch of logits (and its
targets, drawn from a sharpened softmax of the same logits so the model is over-confident) is generated on the
fly from a seeded ``torch.Generator``; nothing is held across batches by the harness. Three implementations
see the same batches:

* ``lightning_xai``: ``calibration_update`` per batch with its defaults (``input="auto"``, value checks on,
  a 100,000-prediction reservoir for the equal-mass ECE; Brier and NLL too) and one ``calibration_compute``;
* ``lightning_xai (no sample)``: the same with ``adaptive_sample=0`` (no ``ace``);
* ``torchmetrics``: ``MulticlassCalibrationError(num_classes=100, n_bins=15)`` ``.update`` per batch and one
  ``.compute`` (it appends every confidence and outcome: O(samples) state).

Each implementation runs once, in a fresh Python process of its own, so that one's memory cannot hide in the
other's; with ``--repeats R`` the three run R times in rotating order and the medians are printed (on a
shared machine single timings can easily move by 10%). Columns:

* ``update s`` / ``compute s``: wall-clock seconds spent inside the metric calls only (batch generation is
  not counted);
* ``CPU s``: CPU seconds of the process inside the same calls (update + compute). On a shared machine the
  wall clock also counts time the process waited for a core; CPU time does not, so its ratio is the steadier
  one (it still moves with cache and hyperthread contention);
* ``state MB``: bytes of the tensors the metric holds after the last update (exact: ``numel * element_size``
  summed over the state);
* ``peak RSS MB``: growth of the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``,
  reset through ``/proc/self/clear_refs`` just before the loop) over its resident size at that moment. It
  includes every transient of the loop and of ``compute`` (torchmetrics' concatenation and bucketing of all
  confidences) and the allocator's own slack, and the harness's batch generation, which is the same for all;
* ``ECE``: the l1 calibration error each reports.

The next lines check that the two ECEs agree and give the time ratios, as medians and as the range over the
repeats (each repeat pairs one run of each).

Separate processes run minutes apart, and on a shared machine the load can change in between. So the
benchmark also times the three **paired** (unless ``--no-paired``): one process holds all three and feeds each
batch to each of them, in a shuffled order, so every implementation sees the same load and the same cache
state; the table gives update + compute seconds (wall and CPU) and the ratios, median and range over
``--repeats`` such runs. ``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = ("impl", "predictions", "update s", "compute s", "total s", "CPU s", "state MB", "peak RSS MB", "ECE")
IMPLS = ("lightning_xai", "lightning_xai (no sample)", "torchmetrics")


def batches(samples: int, classes: int, batch: int, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Logits and targets, one batch at a time, from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, samples, batch):
        size = min(batch, samples - start)
        logits = torch.randn(size, classes, generator=generator) * 3
        gumbel = -torch.log(-torch.log(torch.rand(size, classes, generator=generator).clamp_min(1e-12)))
        yield logits, (logits / 2 + gumbel).argmax(dim=1)  # targets from softmax(logits / 2): over-confident


def _memory_kb() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _nbytes(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _make(impl: str, classes: int, batch: int) -> tuple[Any, Any, Any]:
    """``update(x, y)``, ``compute() -> ECE`` and ``state() -> tensors`` of one implementation, warmed up."""
    from torchmetrics.classification import MulticlassCalibrationError

    from lightning_xai.functional.calibration import (
        calibration_compute,
        calibration_state,
        calibration_update,
    )

    warm_x, warm_y = next(batches(batch, classes, batch, seed=1))
    if impl == "torchmetrics":
        MulticlassCalibrationError(num_classes=classes, n_bins=15).update(warm_x, warm_y)
        metric = MulticlassCalibrationError(num_classes=classes, n_bins=15)
        return (lambda x, y: metric.update(x, y), lambda: float(metric.compute()),
                lambda: list(metric.confidences) + list(metric.accuracies))
    sample = 100_000 if impl == "lightning_xai" else 0
    calibration_compute(calibration_update(calibration_state(15, adaptive_sample=sample), warm_x, warm_y,
                                           "multiclass"))
    calibration = calibration_state(15, adaptive_sample=sample)
    return (lambda x, y: calibration_update(calibration, x, y, "multiclass"),
            lambda: float(calibration_compute(calibration)["ece"]),
            lambda: [value for value in vars(calibration).values() if isinstance(value, Tensor)])


def worker(impl: str, samples: int, classes: int, batch: int) -> dict[str, float]:
    """Run one implementation over the stream; return its timings, memory and ECE."""
    update, compute, state = _make(impl, classes, batch)
    peak_reset = _reset_peak()
    before = _memory_kb()["VmRSS"]
    update_s = cpu_s = 0.0
    for x, y in batches(samples, classes, batch):
        start, cpu = time.perf_counter(), time.process_time()
        update(x, y)
        update_s += time.perf_counter() - start
        cpu_s += time.process_time() - cpu
    state_bytes = _nbytes(state())
    start, cpu = time.perf_counter(), time.process_time()
    ece = compute()
    compute_s = time.perf_counter() - start
    cpu_s += time.process_time() - cpu
    peak = _memory_kb()["VmHWM"]
    return {
        "update_s": update_s,
        "compute_s": compute_s,
        "cpu_s": cpu_s,
        "state_mb": state_bytes / 2**20,
        "peak_rss_mb": (peak - before) / 1024 if peak_reset else float("nan"),
        "ece": ece,
    }


def paired_worker(samples: int, classes: int, batch: int, seed: int) -> dict[str, dict[str, float]]:
    """All three implementations in one process, each batch fed to each in a shuffled order."""
    impls = {impl: _make(impl, classes, batch) for impl in IMPLS}
    wall = dict.fromkeys(IMPLS, 0.0)
    cpu = dict.fromkeys(IMPLS, 0.0)
    order, shuffle = list(IMPLS), random.Random(seed).shuffle

    def timed(impl: str, call: Any, *args: Any) -> None:
        start, clock = time.perf_counter(), time.thread_time()
        call(*args)
        wall[impl] += time.perf_counter() - start
        cpu[impl] += time.thread_time() - clock

    for x, y in batches(samples, classes, batch):
        shuffle(order)
        for impl in order:
            timed(impl, impls[impl][0], x, y)
    for impl in order:
        timed(impl, impls[impl][1])
    return {impl: {"total_s": wall[impl], "cpu_s": cpu[impl]} for impl in IMPLS}


def run_worker(impl: str, args: argparse.Namespace) -> Any:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--threads",
        str(args.threads),
        "--samples",
        str(args.samples),
        "--classes",
        str(args.classes),
        "--batch",
        str(args.batch),
        "--seed",
        str(args.seed),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{impl} worker failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="runs per implementation; medians are shown")
    parser.add_argument("--quick", action="store_true", help="20,000 predictions: a smoke run")
    parser.add_argument("--no-paired", action="store_true", help="skip the paired (interleaved) timing")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=(*IMPLS, "paired"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.samples = min(args.samples, 20_000)
    torch.set_num_threads(args.threads)
    if args.worker == "paired":
        print(json.dumps(paired_worker(args.samples, args.classes, args.batch, args.seed)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.samples, args.classes, args.batch)))
        return

    print(
        f"calibration benchmark: {args.samples:,} predictions, {args.classes} classes, "
        f"batches of {args.batch}, n_bins=15, torch {torch.__version__}, {args.threads} thread(s), CPU; "
        f"{args.repeats} run(s) each, each in its own process"
    )
    runs: dict[str, list[dict[str, float]]] = {impl: [] for impl in IMPLS}
    for repeat in range(max(1, args.repeats)):
        order = IMPLS[repeat % len(IMPLS) :] + IMPLS[: repeat % len(IMPLS)]
        for impl in order:
            runs[impl].append(run_worker(impl, args))
    rows = {
        impl: {key: statistics.median(run[key] for run in runs[impl]) for key in runs[impl][0]}
        for impl in IMPLS
    }
    widths = (26, 11, 9, 10, 8, 7, 9, 12, 10)
    print("  ".join(name.ljust(width) for name, width in zip(HEADER, widths)))
    for impl, row in rows.items():
        cells = (
            impl,
            f"{args.samples:,}",
            f"{row['update_s']:.3f}",
            f"{row['compute_s']:.3f}",
            f"{row['update_s'] + row['compute_s']:.3f}",
            f"{row['cpu_s']:.3f}",
            f"{row['state_mb']:.2f}",
            f"{row['peak_rss_mb']:.1f}",
            f"{row['ece']:.6f}",
        )
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)))
    ours, reference = rows["lightning_xai"]["ece"], rows["torchmetrics"]["ece"]
    difference = abs(ours - reference)
    verdict = "agree" if difference < 1e-6 else "DISAGREE"
    print(
        f"ECE lightning_xai {ours:.8f} vs torchmetrics {reference:.8f}: |difference| = {difference:.2e} "
        f"(tolerance 1e-6): {verdict}"
    )
    theirs = rows["torchmetrics"]
    for impl in IMPLS[:2]:
        mine = rows[impl]
        wall = [_total(a) / _total(b) for a, b in zip(runs[impl], runs["torchmetrics"])]
        cpu = [a["cpu_s"] / b["cpu_s"] for a, b in zip(runs[impl], runs["torchmetrics"])]
        print(
            f"{impl} / torchmetrics: time {_total(mine) / _total(theirs):.2f} ({_span(wall)}), "
            f"CPU time {mine['cpu_s'] / theirs['cpu_s']:.2f} ({_span(cpu)}), "
            f"state {mine['state_mb'] / theirs['state_mb']:.2f}, "
            f"peak RSS growth {mine['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}"
        )
    if not args.no_paired:
        paired(args)


def paired(args: argparse.Namespace) -> None:
    """Time the three interleaved in one process, ``--repeats`` times, and print medians and ratio ranges."""
    runs = []
    for repeat in range(max(1, args.repeats)):
        args.seed = repeat
        runs.append(run_worker("paired", args))
    print(f"paired: the three in one process, batches interleaved in shuffled order; {len(runs)} run(s)")
    print("  ".join(name.ljust(width) for name, width in zip(("impl", "total s", "CPU s"), (26, 9, 9))))
    for impl in IMPLS:
        cells = (impl, f"{statistics.median(r[impl]['total_s'] for r in runs):.3f}",
                 f"{statistics.median(r[impl]['cpu_s'] for r in runs):.3f}")
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, (26, 9, 9))))
    for impl in IMPLS[:2]:
        wall = [r[impl]["total_s"] / r["torchmetrics"]["total_s"] for r in runs]
        cpu = [r[impl]["cpu_s"] / r["torchmetrics"]["cpu_s"] for r in runs]
        print(f"paired {impl} / torchmetrics: time {statistics.median(wall):.2f} ({_span(wall)}), "
              f"CPU time {statistics.median(cpu):.2f} ({_span(cpu)})")


def _span(ratios: list[float]) -> str:
    return f"range {min(ratios):.2f}-{max(ratios):.2f}"


def _total(row: dict[str, float]) -> float:
    return row["update_s"] + row["compute_s"]


if __name__ == "__main__":
    main()
