"""Measuring helpers shared by the benchmarks: CPU and wall time, and peak resident memory on the CPU.

Peak memory is the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) above its RSS at the
start of the call, the mark reset through ``/proc/self/clear_refs`` after ``malloc_trim``: the whole process
(model activations, autograd buffers, inputs a method expands, caches), as the kernel counts it. ``tracemalloc``
would miss it: it sees Python's allocator, not torch's.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["peak_rss", "pin_allocator", "timed"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


@contextlib.contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Peak resident memory (MiB) above the RSS at entry: the kernel's high-water mark (``VmHWM``), reset at
    entry through ``/proc/self/clear_refs`` -- no sampling thread, so the timed CPU seconds stay clean (a
    thread polling every 2 ms cost 5-15% CPU). Falls back to polling where the reset is not allowed."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    out = [0.0]
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kib("VmRSS")
    except OSError:
        with _polled_peak() as polled:
            yield polled
        return
    try:
        yield out
    finally:
        out[0] = max(0, _status_kib("VmHWM") - base) / 2**10


@contextlib.contextmanager
def _polled_peak() -> Iterator[list[float]]:
    base, peak, stop = _status_kib("VmRSS"), [0], threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _status_kib("VmRSS"))
            time.sleep(0.002)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out = [0.0]
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out[0] = max(0, max(peak[0], _status_kib("VmRSS")) - base) / 2**10


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


def pin_allocator() -> str:
    """Fix glibc's mmap and trim thresholds for the whole run. By default they adapt to the allocation
    history, and the same floor run swung between ~45 and ~95 page faults per row (20-40% of its CPU time,
    as kernel time) depending on what ran before it; fixed, no method and no floor pays page faults inside a
    run beyond the first touch after the ``malloc_trim`` that precedes every timed call."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 256 * 2**20) == 1 and libc.mallopt(-1, 2**30) == 1  # M_MMAP_, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        ok = False
    return "glibc mmap/trim thresholds fixed" if ok else "allocator defaults (mallopt unavailable)"
