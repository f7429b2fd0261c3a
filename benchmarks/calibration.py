"""Streaming calibration: lightning_xai's fixed-size bins against torchmetrics' stored confidences.

    python benchmarks/calibration.py [--threads 1] [--repeats 1] [--quick]

1,000,000 multiclass predictions (100 classes) arrive in batches of 512. Each batch of logits (and its
targets, drawn from a sharpened softmax of the same logits so the model is over-confident) is generated on the
fly from a seeded ``torch.Generator``; nothing is held across batches by the harness. Three implementations
see the same batches:

* ``lightning_xai``: ``calibration_update`` per batch with its defaults (``input="auto"``, value checks on,
  a 100,000-prediction reservoir for the equal-mass ECE; Brier and NLL too) and one ``calibration_compute``;
* ``lightning_xai (no sample)``: the same with ``adaptive_sample=0``;
* ``torchmetrics``: ``MulticlassCalibrationError(num_classes=100, n_bins=15)`` ``.update`` per batch and one
  ``.compute`` (it appends every confidence and outcome: O(samples) state).

Each implementation runs once, in a fresh Python process of its own, so that one's memory cannot hide in the
other's; with ``--repeats R`` the three run R times in rotating order and the medians are printed (on a
shared machine single timings can easily move by 10%). Columns:

* ``update s`` / ``compute s``: wall-clock seconds spent inside the metric calls only (batch generation is
  not counted);
* ``state MB``: bytes of the tensors the metric holds after the last update (exact: ``numel * element_size``
  summed over the state);
* ``peak RSS MB``: growth of the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``,
  reset through ``/proc/self/clear_refs`` just before the loop) over its resident size at that moment. It
  includes every transient of the loop and of ``compute`` (torchmetrics' concatenation and bucketing of all
  confidences) and the allocator's own slack, and the harness's batch generation, which is the same for all;
* ``ECE``: the l1 calibration error each reports.

The last line checks that the two ECEs agree. ``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = ("impl", "predictions", "update s", "compute s", "total s", "state MB", "peak RSS MB", "ECE")
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


def worker(impl: str, samples: int, classes: int, batch: int) -> dict[str, float]:
    """Run one implementation over the stream; return its timings, memory and ECE."""
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

        def update(x: Tensor, y: Tensor) -> None:
            metric.update(x, y)

        def compute() -> float:
            return float(metric.compute())

        def state() -> list[Tensor]:
            return list(metric.confidences) + list(metric.accuracies)
    else:
        sample = 100_000 if impl == "lightning_xai" else 0
        calibration_update(calibration_state(15, adaptive_sample=sample), warm_x, warm_y, "multiclass")
        calibration = calibration_state(15, adaptive_sample=sample)

        def update(x: Tensor, y: Tensor) -> None:
            calibration_update(calibration, x, y, "multiclass")

        def compute() -> float:
            return float(calibration_compute(calibration)["ece"])

        def state() -> list[Tensor]:
            return [value for value in vars(calibration).values() if isinstance(value, Tensor)]

    peak_reset = _reset_peak()
    before = _memory_kb()["VmRSS"]
    update_s = 0.0
    for x, y in batches(samples, classes, batch):
        start = time.perf_counter()
        update(x, y)
        update_s += time.perf_counter() - start
    state_bytes = _nbytes(state())
    start = time.perf_counter()
    ece = compute()
    compute_s = time.perf_counter() - start
    peak = _memory_kb()["VmHWM"]
    return {
        "update_s": update_s,
        "compute_s": compute_s,
        "state_mb": state_bytes / 2**20,
        "peak_rss_mb": (peak - before) / 1024 if peak_reset else float("nan"),
        "ece": ece,
    }


def run_worker(impl: str, args: argparse.Namespace) -> dict[str, float]:
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
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.samples = min(args.samples, 20_000)
    torch.set_num_threads(args.threads)
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
    widths = (26, 11, 9, 10, 8, 9, 12, 10)
    print("  ".join(name.ljust(width) for name, width in zip(HEADER, widths)))
    for impl, row in rows.items():
        cells = (
            impl,
            f"{args.samples:,}",
            f"{row['update_s']:.3f}",
            f"{row['compute_s']:.3f}",
            f"{row['update_s'] + row['compute_s']:.3f}",
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
    mine, theirs = rows["lightning_xai"], rows["torchmetrics"]
    time_ratio = (mine["update_s"] + mine["compute_s"]) / (theirs["update_s"] + theirs["compute_s"])
    print(
        f"lightning_xai / torchmetrics: time {time_ratio:.2f}, state {mine['state_mb'] / theirs['state_mb']:.2f}, "
        f"peak RSS growth {mine['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
