"""Shared test helpers: tiny data, tiny models, TensorBoard event reading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def read_events(log_dir: str | Path) -> dict[str, dict[str, list[int]]]:
    """Read every TensorBoard event file under ``log_dir`` with tensorboard's own reader.

    Returns ``{"images": {tag: [steps]}, "scalars": {tag: [steps]}, ...}``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[str, list[int]]] = {"images": {}, "scalars": {}, "histograms": {}, "tensors": {}}
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("images", []):
            out["images"].setdefault(tag, []).extend(e.step for e in acc.Images(tag))
        for tag in tags.get("scalars", []):
            out["scalars"].setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
        for tag in tags.get("histograms", []):
            out["histograms"].setdefault(tag, []).extend(e.step for e in acc.Histograms(tag))
        for tag in tags.get("tensors", []):
            out["tensors"].setdefault(tag, []).extend(e.step for e in acc.Tensors(tag))
    return out


def scalar_values(log_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    vals: list[tuple[int, float]] = []
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            vals.extend((e.step, e.value) for e in acc.Scalars(tag))
    return vals


def tiny_trainer(tmp_path: Path, callbacks: list[Any], **kw: Any) -> Any:
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    opts: dict[str, Any] = dict(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=TensorBoardLogger(str(tmp_path), name="tb"),
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
        num_sanity_val_steps=0, enable_checkpointing=False, deterministic=True,
    )
    opts.update(kw)
    return Trainer(**opts)


@pytest.fixture
def shapes_dm() -> Any:
    from lightning_xai.datasets import SyntheticShapesDataModule

    return SyntheticShapesDataModule(batch_size=16, num_train=64, num_val=32, num_test=32, image_size=32)


def run_benchmark(script: str, *args: str, timeout: int = 300) -> list[str]:
    """Run ``benchmarks/<script>`` with ``args`` in a subprocess (1 thread) and return its stdout lines."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(root / "benchmarks" / script), *args], cwd=root, env=env,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.splitlines()
