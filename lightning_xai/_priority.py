"""Background work at a lower CPU priority than the training loop."""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["lower_priority"]


def lower_priority(increment: int = 10) -> None:
    """Run the calling thread (on Linux; elsewhere the process) at a lower CPU priority (``nice`` + ``increment``):
    background work (drawing, explaining alongside training) takes the cores the training loop leaves idle instead
    of a share of its core. Measured (benchmarks/overhead.py, 2 cores): a third runnable thread otherwise slows the
    loop to ~2/3 of a core while it runs.

    Example:
        >>> import threading
        >>> worker = threading.Thread(target=lower_priority)  # lowers that thread only (Linux)
        >>> worker.start(); worker.join()
    """
    try:
        if sys.platform.startswith("linux"):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.getpriority(
                os.PRIO_PROCESS, threading.get_native_id()) + increment))
        elif hasattr(os, "nice"):
            os.nice(increment)
    except OSError:  # not allowed here: run at the same priority
        pass
