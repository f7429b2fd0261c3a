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

__all__ = ["peak_live", "peak_rss", "pin_allocator", "timed"]

_MMAP_THRESHOLD, _TRIM_THRESHOLD = -3, -1  # mallopt parameters
_PINNED = (256 * 2**20, 2**30)  # pin_allocator's mmap and trim thresholds


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
        ok = libc.mallopt(_MMAP_THRESHOLD, _PINNED[0]) == 1 and libc.mallopt(_TRIM_THRESHOLD, _PINNED[1]) == 1
    except (OSError, AttributeError):
        ok = False
    return "glibc mmap/trim thresholds fixed" if ok else "allocator defaults (mallopt unavailable)"


def peak_live(fn: Callable[[], Any]) -> float:
    """Peak resident memory (MiB) of one call of ``fn`` above the RSS before it, measured with glibc handing every
    block of 64 KiB or more straight back to the kernel when it is freed (mmap threshold 64 KiB, heap trimmed
    at once), then :func:`pin_allocator`'s thresholds restored. The high-water mark is then that of the live
    allocations -- torch tensors, numpy arrays, Python objects -- with no free-but-kept heap in it, whatever ran
    before (with the pinned thresholds the same LIME call read anywhere from 40 to 250 MiB). An extra, untimed
    run: page faults make it slower."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_MMAP_THRESHOLD, 64 * 2**10)
        libc.mallopt(_TRIM_THRESHOLD, 64 * 2**10)
    except (OSError, AttributeError):
        libc = None
    try:
        with peak_rss() as peak:
            fn()
    finally:
        if libc is not None:
            libc.mallopt(_MMAP_THRESHOLD, _PINNED[0])
            libc.mallopt(_TRIM_THRESHOLD, _PINNED[1])
    return peak[0]
