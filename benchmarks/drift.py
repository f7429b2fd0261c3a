"""Attribution drift: AttributionStore write/load and the drift metrics, against scipy's Spearman per probe.

    python benchmarks/drift.py [--threads 1] [--repeats 5] [--probes 64] [--size 224] [--quick]

64 probe maps of 224 x 224 (``--probes``, ``--size``), made like Grad-CAM maps (a random 7 x 7 ReLU'd map,
upsampled bilinearly, so non-negative with ties at 0) and, for the signed case, like gradient maps (Gaussian).
The second snapshot is the first plus noise. It times, on the CPU:

* ``write``: ``AttributionStore.write`` of one snapshot (one array of all probes) as float16 and float32 into
  a fresh store, one transaction with ``synchronous=FULL`` (an fsync per commit); ``MB on disk`` is the
  store file's size after closing divided by the number of snapshots in it;
* ``load``: ``AttributionStore.load`` of one snapshot back to float32 tensors;
* ``drift_metrics``: all six map metrics (spearman, ndcg, topk_iou, cosine, com_shift, focus_radius_change)
  for every probe; for non-negative maps one sort per map serves both rankings, signed maps take two;
* ``spearman``: ``lightning_xai.functional.drift.spearman`` alone;
* ``scipy.stats.spearmanr``: the peer, called once per probe on the flattened maps (Spearman only);
* ``store.compare``: two loads and ``drift_metrics``, as the drift callback does.

Each row is the median of ``--repeats`` runs after one warm-up; ``vs scipy`` is scipy's time for Spearman
alone divided by the row's time (above 1: faster than scipy). ``--quick`` shrinks everything for a smoke run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch
import torch.nn.functional as F
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_xai.functional.drift import drift_metrics, spearman
from lightning_xai.sinks.store import AttributionStore

HEADER = ("operation", "maps", "seconds", "MB on disk", "vs scipy")


def make_maps(probes: int, size: int, signed: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A reference batch and a drifted one (reference + noise)."""
    g = torch.Generator().manual_seed(seed)
    if signed:
        a = torch.randn(probes, size, size, generator=g)
        return a, a + 0.3 * torch.randn(probes, size, size, generator=g)
    coarse = torch.randn(probes, 1, 7, 7, generator=g).relu()
    a = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    noise = F.interpolate(torch.randn(probes, 1, 7, 7, generator=g), size=(size, size), mode="bilinear",
                          align_corners=False)[:, 0]
    return a, (a + 0.3 * noise).relu()


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def scipy_spearman(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    x, y = a.flatten(1).numpy(), b.flatten(1).numpy()
    return [stats.spearmanr(x[i], y[i]).statistic for i in range(x.shape[0])]


def store_rows(a: torch.Tensor, b: torch.Tensor, repeats: int, folder: Path) -> tuple[list[tuple], float]:
    rows, label = [], f"{a.shape[0]} x {a.shape[1]}x{a.shape[2]}"
    for dtype in ("float16", "float32"):
        path = folder / f"{dtype}.sqlite"
        with AttributionStore(path) as store:
            write_one = partial(store.write, "run", {"gradcam": a}, epoch=0, global_step=0, method="gradcam",
                                probe_fingerprint="fp", dtype=dtype)
            write = median_time(write_one, repeats)
            load = median_time(partial(store.load, "run", 0), repeats)
            count = len(store.snapshots("run"))
        megabytes = path.stat().st_size / count / 1e6
        rows.append(("store.write", f"{label} {dtype}", f"{write:.4f}", f"{megabytes:.2f}", "-"))
        rows.append(("store.load", f"{label} {dtype}", f"{load:.4f}", "-", "-"))
    with AttributionStore(folder / "compare.sqlite") as store:
        store.write("ref", {"gradcam": a}, epoch=0, global_step=0, method="gradcam", probe_fingerprint="fp")
        store.write("new", {"gradcam": b}, epoch=0, global_step=0, method="gradcam", probe_fingerprint="fp")
        compare = median_time(partial(store.compare, ("ref", 0), ("new", 0), key="gradcam"), repeats)
    return rows, compare


def benchmark(probes: int, size: int, repeats: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    label = f"{probes} x {size}x{size}"
    with tempfile.TemporaryDirectory() as folder:
        stored, compare = store_rows(*make_maps(probes, size, False, 0), repeats, Path(folder))
    rows += stored
    for signed in (False, True):
        a, b = make_maps(probes, size, signed, 1)
        kind = f"{label} {'signed' if signed else 'non-negative'}"
        peer = median_time(partial(scipy_spearman, a, b), repeats)
        ours = median_time(partial(spearman, a, b), repeats)
        every = median_time(partial(drift_metrics, a, b), repeats)
        diff = max(abs(x - y) for x, y in zip(spearman(a, b).tolist(), scipy_spearman(a, b)))
        rows.append(("drift_metrics (all 6)", kind, f"{every:.4f}", "-", f"{peer / every:.2f}x"))
        rows.append(("spearman", kind, f"{ours:.4f}", "-", f"{peer / ours:.2f}x (max diff {diff:.1e})"))
        rows.append(("scipy.stats.spearmanr loop", kind, f"{peer:.4f}", "-", "1.00x"))
        if not signed:
            rows.append(("store.compare (2 loads + all 6)", f"{label} float16", f"{compare:.4f}", "-",
                         f"{peer / compare:.2f}x"))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(HEADER, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after a warm-up (default 5)")
    parser.add_argument("--probes", type=int, default=None, help="probe maps per snapshot (default 64)")
    parser.add_argument("--size", type=int, default=None, help="map height and width (default 224)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 5)
    probes = args.probes if args.probes is not None else (4 if args.quick else 64)
    size = args.size if args.size is not None else (32 if args.quick else 224)
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"SQLite {sqlite3.sqlite_version}, CPU, "
        f"{torch.get_num_threads()} threads, median of {repeats} after 1 warm-up"
    )
    print_table(benchmark(probes, size, repeats))
    if hasattr(os, "getloadavg"):  # timings from a busy machine are not comparable: say how busy it was
        print(f"load average at the end (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
