"""Cost of each figure the quickstart's callbacks draw, timed one by one in this process.

    python benchmarks/figures.py [--repeats 5] [--save DIR] [--quick]

One epoch of the quickstart fit (benchmarks/overhead.py's settings and callbacks: Grad-CAM + Grad-CAM++, SHAP,
calibration with its gallery, attribution drift; two epochs so that drift has a pair to compare) records every
figure builder the callbacks hand to the figure worker; each is then drawn to PNG bytes ``--repeats`` times here
(:func:`lightning_xai.render.draw_png`, the function the drawing process runs) and the fastest kept (noise only adds), with the
split into building the figure (artists, layout engine set up), drawing it (layout included) and encoding the PNG.
The target of issue 17 is <= 0.25 s per figure at the defaults. ``--save DIR`` writes the PNGs to look at.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning.pytorch import Trainer, seed_everything  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from benchmarks.overhead import CONFIGS, _callbacks  # noqa: E402
from lightning_xai.datasets import SyntheticShapesDataModule  # noqa: E402
from lightning_xai.demo import ShapesCNN  # noqa: E402
from lightning_xai.sinks._worker import figure_worker  # noqa: E402


def record(epochs: int, num_train: int) -> list[tuple[str, Any, int]]:
    """(name, builder, dpi) of every figure one quickstart fit with all four callbacks hands over."""
    worker = figure_worker()
    seen: list[tuple[str, Any, int]] = []
    hand_over = worker.job

    def job(name: str, builder: Any, dpi: int) -> Any:
        seen.append((name, builder, dpi))
        return hand_over(name, builder, dpi)

    worker.job = job  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as folder:
            seed_everything(0, verbose=False)
            dm = SyntheticShapesDataModule(batch_size=32, num_train=num_train, num_val=128, image_size=32,
                                           num_classes=3)
            trainer = Trainer(max_epochs=epochs, logger=TensorBoardLogger(folder, name="bench"),
                              callbacks=_callbacks(CONFIGS[-1], folder, "background"), accelerator="cpu",
                              devices=1, enable_progress_bar=False, enable_model_summary=False,
                              enable_checkpointing=False, log_every_n_steps=8)
            trainer.fit(ShapesCNN(num_classes=3), datamodule=dm)
    finally:
        del worker.job
    last: dict[str, tuple[str, Any, int]] = {}
    for name, builder, dpi in seen:  # one of each figure: the last epoch's
        last[os.path.basename(name)] = (name, builder, dpi)
    return list(last.values())


def time_one(builder: Any, dpi: int) -> tuple[float, float, float, bytes]:
    """Seconds to build, draw and encode one figure, and its PNG bytes (as draw_png makes them)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lightning_xai.render import draw_png
    from lightning_xai.render._utils import encode_png

    t0 = time.perf_counter()
    fig = builder()
    t1 = time.perf_counter()
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    t2 = time.perf_counter()
    encode_png(np.asarray(canvas.buffer_rgba()), dpi)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, draw_png(builder, dpi) or b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--save", default=None, help="folder to write the PNGs to")
    parser.add_argument("--quick", action="store_true", help="64 training images, 1 repeat: a smoke run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    figures = record(2, 64 if args.quick else 256)
    repeats = 1 if args.quick else args.repeats
    print(f"{len(figures)} figures of the quickstart's callbacks, fastest of {repeats} draws, 1 thread")
    print("| figure | size px | build s | draw s | encode s | total s | PNG KiB |")
    print("|---|---|---|---|---|---|---|")
    totals = []
    for name, builder, dpi in figures:
        runs = [time_one(builder, dpi) for _ in range(repeats)]
        build, draw, encode = (min(r[i] for r in runs) for i in range(3))  # min: a noisy machine only adds
        png = runs[-1][3]
        from lightning_xai.sinks._png import decode_png

        height, width = decode_png(png).shape[:2]
        total = build + draw + encode
        totals.append(total)
        short = "/".join(Path(name).parts[-2:])
        print(f"| {short} | {width}x{height} | {build:.3f} | {draw:.3f} | {encode:.3f} | {total:.3f} | "
              f"{len(png) / 1024:.0f} |")
        if args.save:
            out = Path(args.save) / f"{short.replace('/', '_')}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(png)
    print(f"median {statistics.median(totals):.3f} s, max {max(totals):.3f} s, sum {sum(totals):.2f} s per epoch "
          f"of these figures; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
