"""Smoke runs of the benchmark scripts: they start, run once on tiny sizes and print their table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gradcam_benchmark_runs() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gradcam.py"), "--quick", "--threads", "1", "--repeats=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    for column in ("method", "impl", "seconds", "x floor", "speed-up vs pgc", "max abs diff"):
        assert column in header
    assert any("lightning_xai" in line and "gradcam++" in line for line in lines)
    assert any("pytorch_grad_cam" in line for line in lines)
