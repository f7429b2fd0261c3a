"""What an explanation step shows while it runs and says when it is done.

A progress line (tqdm, on rank zero, only while Lightning's progress bar is on) appears once a step has taken
more than :data:`DELAY_S` seconds and moves at each stage of the step (probe, explanation, artifacts); at the end
one summary line says what was written and how long it took, and the time is logged as ``xai/<name>/seconds``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["DELAY_S", "Progress", "progress"]

DELAY_S = 2.0


class Progress:
    """One step's progress line (or nothing) and its clock.

    Example:
        >>> p = Progress(None)
        >>> p.advance("explanation"); p.seconds >= 0
        True
    """

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.start = time.perf_counter()

    def advance(self, what: str) -> None:
        """The step has reached ``what`` (shown on the line once it is visible)."""
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


@contextlib.contextmanager
def progress(trainer: pl.Trainer, label: str, steps: int) -> Iterator[Progress]:
    """A :class:`Progress` for one step of ``steps`` stages, labelled ``label``; a line only on rank zero with the
    trainer's progress bar on."""
    bar = None
    if trainer.is_global_zero and trainer.progress_bar_callback is not None:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=label, delay=DELAY_S, leave=False, dynamic_ncols=True)
    try:
        yield Progress(bar)
    finally:
        if bar is not None:
            bar.close()


def summary(label: str, seconds: float, counts: dict[str, int], figures: str) -> None:
    """Say on rank zero what one step wrote and how long it took.

    Example:
        >>> summary("gradcam · fit epoch 3", 0.41, {"files": 3, "figures": 1, "scalars": 6}, "background")
    """
    drawn = "drawn in the background" if figures == "background" else "drawn"
    rank_zero_info(f"lightning_xai: {label}: {_count(counts['files'], 'file')}, "
                   f"{_count(counts['figures'], 'figure')} ({drawn}), {_count(counts['scalars'], 'scalar')} "
                   f"in {seconds:.2f} s")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"
