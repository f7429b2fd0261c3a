"""Smoke run of benchmarks/calibration.py: it starts, runs once on a small stream and prints its tables."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT


def test_calibration_benchmark_runs() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "calibration.py"), "--quick"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("impl"))
    for column in ("predictions", "update s", "compute s", "total s", "state MB", "peak RSS MB", "ECE"):
        assert column in header
    for impl in ("lightning_xai", "lightning_xai (no sample)", "torchmetrics"):
        assert any(line.startswith(impl + " ") for line in lines), impl
    agreement = next(line for line in lines if line.startswith("ECE lightning_xai"))
    assert agreement.endswith(": agree"), agreement
    for impl in ("lightning_xai", "lightning_xai (no sample)"):  # ratios, also from the interleaved run
        assert any(line.startswith(f"{impl} / torchmetrics: time ") and "range" in line for line in lines), impl
        assert any(line.startswith(f"paired {impl} / torchmetrics: time ") for line in lines), impl
