"""Figures drawn off the training path: a background thread hands them to a drawing process and delivers the PNGs.

The training loop only pickles each figure's builder (a ``functools.partial`` of a module-level renderer over CPU
tensors and arrays, see :meth:`ArtifactSink.figure`) and puts the event's batch on a bounded queue (at most
``max_pending`` events wait: a slow disk or a huge grid slows the loop down instead of filling memory). One thread
takes the batches in order, has each figure drawn by the process of :mod:`lightning_xai.sinks._render_child` (on
another core; a thread drawing beside the loop would fight it for the GIL -- measured: a fit took 2.4x as long
while a thread drew 8 figures), writes the PNG, logs it and, when the event's figures are done, appends the event's
manifest line. While a flush waits (the end of fit: the training loop is idle), the flushing thread draws queued
figures too, newest first, in this process: the last epoch's figures are drawn on two cores. Nothing is lost:
:meth:`FigureWorker.flush` (called by the callbacks at the end of fit, validate and test, on an exception or
KeyboardInterrupt, and at interpreter exit) waits for every queued figure; a figure that fails is a warning naming
it, raised in the thread that flushes, with the drawing process's traceback.

Where the process cannot be used (it does not start, dies, or cannot unpickle a builder defined in a user's
``__main__``), the figure is drawn in this process as before, with one warning that says why.
"""

from __future__ import annotations

import atexit
import collections
import os
import pickle
import queue
import select
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from lightning_xai.sinks._figure_jobs import FigureBatch, FigureJob, category, cpu_pickle, draw_here
from lightning_xai.sinks._figure_jobs import matplotlib_settings, newest_unclaimed, travels
from lightning_xai.sinks._render_child import read_message, write_message

__all__ = ["FigureBatch", "FigureJob", "FigureWorker", "figure_worker", "flush_figures"]

_CHILD = "from lightning_xai.sinks._render_child import main; main()"
JOB_TIMEOUT_S = 300.0  # one figure taking longer than this is a failure (the process is restarted)


class FigureWorker:
    """The background figure worker (one per process, see :func:`figure_worker`).

    Example:
        >>> from functools import partial
        >>> from lightning_xai.render._utils import new_figure
        >>> worker, files = FigureWorker(), []
        >>> job = worker.job("empty", partial(new_figure, 1.0, 0.5), dpi=20)
        >>> worker.submit(FigureBatch([job], lambda name, png: name + ".png", lambda f, failed: files.extend(f),
        ...                           "example", "."))
        >>> worker.flush(); files
        ['empty.png']
        >>> worker.close()
    """

    def __init__(self, max_pending: int = 16, help_flush: bool = True) -> None:  # ~2 epochs of the quickstart
        self._queue: queue.Queue[FigureBatch | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._broken: str | None = None  # why the drawing process is not used
        self._told_broken = False
        self._reports: list[tuple[type[Warning], str]] = []
        self._lock = threading.Lock()
        self._batches: collections.deque[FigureBatch] = collections.deque()  # submitted, not yet finished
        self._claims = threading.Lock()  # who draws which job
        self._drawing_here = threading.Lock()  # one figure at a time in this process (rcParams are global)
        self.drawn_in_process = 0  # figures drawn by the drawing process (read by tests and benchmarks)
        self.help_flush = help_flush  # the flushing thread draws queued figures too (False: the process alone)
        self.drawn_while_flushing = 0  # figures the flushing thread drew here

    # ------------------------------------------------------------------ training-loop side
    def job(self, name: str, builder: Any, dpi: int) -> FigureJob:
        """Prepare one figure in the calling thread: pickle its builder for the drawing process, or draw it here
        when it cannot travel (a built figure, a closure, a user's ``__main__`` function)."""
        job = FigureJob(name, builder, dpi)
        if self._broken is None and not hasattr(builder, "savefig") and travels(builder):
            try:
                job.style = matplotlib_settings()
                job.payload = cpu_pickle((job.style, builder, dpi))
            except Exception:  # not picklable after all (a lambda deep inside): draw it here
                job.payload = None
        if job.payload is None:
            self._draw_here(job)
        return job

    def submit(self, batch: FigureBatch) -> None:
        """Queue one event's figures (blocks while ``max_pending`` events wait); reports earlier failures."""
        self._report()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="lightning_xai-figures", daemon=True)
            self._thread.start()
        with self._claims:
            self._batches.append(batch)
        self._queue.put(batch)

    def flush(self) -> None:
        """Wait until every queued figure is written and its manifest line appended; warn about failures."""
        if self._thread is not None and self._thread.is_alive():
            self._help()
            self._queue.join()
        self._report()

    def _help(self) -> None:
        """Draw queued figures here, newest first, while the worker draws the oldest (it delivers them in order)."""
        while self.help_flush and self._broken is None:
            job = newest_unclaimed(self._batches, self._claims)
            if job is None:
                return
            try:
                with self._drawing_here:
                    draw_here(job)
                self.drawn_while_flushing += 1
            except BaseException:  # Ctrl+C while drawing it: said, not lost silently
                job.error, job.trace = "interrupted while drawing it", ""
                raise
            finally:
                job.finished.set()

    def close(self) -> None:
        """Flush, stop the thread and end the drawing process."""
        self.flush()
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)
        self._stop_process()

    def process_cpu_seconds(self) -> float:
        """CPU seconds the drawing process has used so far (0 when none runs; Linux ``/proc``, else 0)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return 0.0
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        except (OSError, ValueError, IndexError):
            return 0.0

    # ------------------------------------------------------------------ background thread
    def _serve(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                self._process(batch)
            except BaseException as err:  # never let the thread die with the queue unfinished
                self._say(RuntimeWarning, f"lightning_xai: the figures of {batch.where if batch else '?'} were not "
                                          f"all written ({type(err).__name__}: {err})")
            finally:
                with self._claims:  # batches are taken in order: it is the oldest (by identity, not ==)
                    self._batches = collections.deque(b for b in self._batches if b is not batch)
                self._queue.task_done()

    def _process(self, batch: FigureBatch) -> None:
        for job in batch.jobs:
            with self._claims:
                mine, job.claimed = not job.claimed, True
            if mine:  # else the flushing thread draws it
                if job.png is None and job.error is None:
                    self._draw_in_process(job)
                job.finished.set()
        failed: dict[str, str] = {}
        for job in batch.jobs:
            job.finished.wait()
            if job.error is not None:
                failed[job.name] = job.error
                self._say(RuntimeWarning, f"lightning_xai: the figure {job.name!r} of {batch.where} could not be "
                                          f"drawn ({job.error}); its arrays and JSON are written in {batch.folder}."
                                          f"\n{job.trace}")
                continue
            if job.png:
                try:
                    batch.done.append(batch.deliver(job.name, job.png))
                except Exception as err:
                    failed[job.name] = f"{type(err).__name__}: {err}"
                    self._say(RuntimeWarning, f"lightning_xai: the figure {job.name!r} of {batch.where} could not "
                                              f"be written ({type(err).__name__}: {err})")
        batch.finish(batch.done, failed)

    def _draw_in_process(self, job: FigureJob) -> None:
        proc = self._process_handle()
        if proc is None:
            self._draw_here(job)
            return
        try:
            write_message(proc.stdin, job.payload)  # type: ignore[arg-type]
            ready, _, _ = select.select([proc.stdout], [], [], JOB_TIMEOUT_S)
            answer = read_message(proc.stdout) if ready else "timeout"  # type: ignore[arg-type]
        except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:  # the pipe, not the figure
            self._break(f"it could not be used ({type(err).__name__}: {err})")
            self._draw_here(job)
            return
        if answer == "timeout":
            self._stop_process()
            job.error, job.trace = f"TimeoutError: not drawn within {JOB_TIMEOUT_S:.0f} s", ""
            return
        if answer is None:  # it died drawing this one: not retried here, where it could take the training down
            self._break("")
            code = proc.returncode
            self._broken = f"it ended while drawing {job.name!r} (exit code {code})"
            job.error, job.trace = f"the drawing process ended while drawing it (exit code {code})", ""
            return
        kind, value, extra = answer
        if kind == "ok":
            job.png = value
            self.drawn_in_process += 1
            for kind_name, message in extra:  # the warnings the figure raised there, said here
                self._say(category(kind_name), message)
        elif kind == "none":
            job.png = b""
        elif kind == "load":  # its builder lives where the process cannot import it: draw it here
            self._draw_here(job)
        else:
            job.error, job.trace = value, extra

    def _draw_here(self, job: FigureJob) -> None:
        with self._drawing_here:
            draw_here(job)

    def _process_handle(self) -> subprocess.Popen[bytes] | None:
        if self._broken is not None:
            return None
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding this lightning_xai
        env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in sys.path if p and p != root]])
        env.setdefault("OMP_NUM_THREADS", "1")
        env["MPLBACKEND"] = "Agg"
        env["CUDA_VISIBLE_DEVICES"] = ""  # it draws; it never holds GPU memory
        try:
            self._proc = subprocess.Popen([sys.executable, "-c", _CHILD],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        except OSError as err:
            self._break(f"it could not start ({type(err).__name__}: {err})")
            return None
        return self._proc

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def _break(self, why: str) -> None:
        self._broken = why
        self._stop_process()

    # ------------------------------------------------------------------ reports, in the caller's thread
    def _say(self, kind: type[Warning], message: str) -> None:
        with self._lock:
            self._reports.append((kind, message))

    def _report(self) -> None:
        with self._lock:
            reports, self._reports = self._reports, []
        if self._broken is not None and not self._told_broken:
            self._told_broken = True
            reports.insert(0, (RuntimeWarning, f"lightning_xai: the background figure process is not used: "
                                               f"{self._broken}. Figures are drawn in the training process."))
        for kind, message in reports:
            warnings.warn(message, kind, stacklevel=3)


_WORKER: FigureWorker | None = None
_WORKER_LOCK = threading.Lock()


def figure_worker() -> FigureWorker:
    """The process's figure worker (started on first use, flushed and closed at interpreter exit).

    Example:
        >>> figure_worker() is figure_worker()
        True
    """
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = FigureWorker()
            atexit.register(_WORKER.close)
        return _WORKER


def flush_figures() -> None:
    """Wait for every figure queued in this process (a no-op when none was)."""
    if _WORKER is not None:
        _WORKER.flush()

