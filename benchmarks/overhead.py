"""Loop cost: the quickstart fit bare, with each callback alone and with all four, paired in one process.

    python benchmarks/overhead.py [--epochs 5] [--repeats 2] [--threads 1] [--figures background,inline] [--quick]

The quickstart's settings (examples/quickstart.py): ShapesCNN, 1024 training and 128 validation images of 32 px,
batch 32, ``--epochs`` epochs, a TensorBoardLogger and a ModelCheckpoint in a fresh temporary folder per fit,
``torch.set_num_threads(--threads)``; the callbacks as the quickstart configures them (Grad-CAM + Grad-CAM++ on 8
probes, SHAP on 4 probes with 16 background samples, calibration with 10 bins and its gallery, attribution drift
on 8 probes into a fresh store). Each configuration's fit is timed end to end (``trainer.fit`` returns after every
figure is written: the callbacks wait for the figure worker at ``on_fit_end``), after one untimed warm-up fit;
configurations are interleaved within each repeat and the median over ``--repeats`` is kept.

``--figures`` compares where the figures are drawn: ``background`` (the default: a separate drawing process, see
``lightning_xai/sinks/_worker.py``) and ``inline`` (in the training loop, as before). Columns: wall s (median),
x bare (wall over the bare fit's), this process's CPU s, the drawing process's CPU s (its figures, on another
core), and the figures written. A machine with fewer free cores than ``--threads`` + 1 shares the drawing process
with the training loop: the load average is printed with the table.
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
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from lightning_xai import (  # noqa: E402
    AttributionDriftCallback,
    CalibrationCallback,
    GradCAMCallback,
    SHAPCallback,
)
from lightning_xai.datasets import SyntheticShapesDataModule  # noqa: E402
from lightning_xai.demo import ShapesCNN  # noqa: E402
from lightning_xai.sinks._worker import figure_worker  # noqa: E402

NAMES = ("square", "circle", "triangle")
CONFIGS = ("bare", "gradcam", "shap", "calibration", "drift", "all four")
OVERLAP: list[bool | str] = ["auto"]  # SHAPCallback(overlap=...): --overlap


def _callbacks(config: str, folder: str, figures: str) -> list[Any]:
    made = {
        "gradcam": lambda: GradCAMCallback(num_samples=8, methods=("gradcam", "gradcam++"), class_names=NAMES,
                                           figures=figures),
        "shap": lambda: SHAPCallback(num_samples=4, n_background=16, class_names=NAMES, figures=figures,
                                     overlap=OVERLAP[0]),
        "calibration": lambda: CalibrationCallback(n_bins=10, class_names=NAMES, figures=figures),
        "drift": lambda: AttributionDriftCallback(num_samples=8, store=os.path.join(folder, "store.sqlite"),
                                                  run="bench", target="label", alert_below=0.5, class_names=NAMES,
                                                  figures=figures),
    }
    if config == "bare":
        return []
    return [make() for name, make in made.items() if config in (name, "all four")]


def fit(config: str, figures: str, args: argparse.Namespace) -> dict[str, float]:
    """One timed fit: wall and CPU seconds of this process, CPU seconds of the drawing process, PNGs written."""
    worker = figure_worker()
    with tempfile.TemporaryDirectory() as folder:
        seed_everything(0, verbose=False)
        dm = SyntheticShapesDataModule(batch_size=32, num_train=args.num_train, num_val=args.num_val,
                                       image_size=32, num_classes=3)
        trainer = Trainer(max_epochs=args.epochs, logger=TensorBoardLogger(folder, name="bench"),
                          callbacks=[*_callbacks(config, folder, figures), ModelCheckpoint(dirpath=folder)],
                          accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                          log_every_n_steps=8)
        drawing = worker.process_cpu_seconds()
        cpu, wall = time.process_time(), time.perf_counter()
        trainer.fit(ShapesCNN(num_classes=3), datamodule=dm)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        drawing = worker.process_cpu_seconds() - drawing
        pngs = len(list(Path(folder).rglob("*.png")))
    return {"wall": wall, "cpu": cpu, "drawing": max(drawing, 0.0), "pngs": pngs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figures", default="background,inline")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--num-train", type=int, default=1024)
    parser.add_argument("--num-val", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 64 + 32 images, 1 repeat: a smoke run")
    parser.add_argument("--overlap", default="auto", choices=("auto", "true", "false"),
                        help="SHAPCallback(overlap=...): explain alongside training where it can (auto, the default)")
    args = parser.parse_args()
    OVERLAP[0] = {"auto": "auto", "true": True, "false": False}[args.overlap]
    if args.quick:
        args.epochs, args.num_train, args.num_val, args.repeats = 1, 64, 32, 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    configs = [c.strip() for c in args.configs.split(",")]
    modes = [m.strip() for m in args.figures.split(",")]
    for given, allowed, name in ((configs, CONFIGS, "--configs"), (modes, ("background", "inline"), "--figures")):
        unknown = [c for c in given if c not in allowed]
        if unknown:  # an unknown name would time a bare fit under its name
            parser.error(f"{name}: unknown {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    runs = [(c, m) for c in configs for m in (modes if c != "bare" else ["background"])]
    fit("all four" if "all four" in configs else configs[-1], modes[0], args)  # warm-up: imports, the process
    results: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in runs}
    for _ in range(args.repeats):
        for config, mode in runs:
            results[(config, mode)].append(fit(config, mode, args))
    bare = statistics.median(r["wall"] for r in results[("bare", "background")]) if ("bare", "background") in \
        results else float("nan")
    print(f"Quickstart fit, {args.epochs} epochs, {args.num_train} + {args.num_val} images, {args.threads} torch "
          f"thread(s), median of {args.repeats}, SHAP overlap={args.overlap}")
    print("| callbacks | figures | wall s | x bare | CPU s (this process) | CPU s (drawing process) | PNGs |")
    print("|---|---|---|---|---|---|---|")
    for (config, mode), rows in results.items():
        wall = statistics.median(r["wall"] for r in rows)
        cpu = statistics.median(r["cpu"] for r in rows)
        drawing = statistics.median(r["drawing"] for r in rows)
        pngs = int(statistics.median(r["pngs"] for r in rows))
        shown = "-" if config == "bare" else mode
        print(f"| {config} | {shown} | {wall:.2f} | {wall / bare:.2f} | {cpu:.2f} | {drawing:.2f} | {pngs} |")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
