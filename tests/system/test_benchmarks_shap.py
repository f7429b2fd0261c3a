"""Smoke run of benchmarks/shap.py: it runs once on tiny sizes and prints its table (no timing asserts)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT


def test_shap_benchmark_runs() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "shap.py"), "--quick", "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model"))
    for column in ("method", "points", "cpu s", "wall s", "x floor", "rel err", "corr", "peak MiB"):
        assert column in header
    for method in (
        "ours stratified",
        "ours adaptive",
        "ours random",
        "shap.GradientExplainer",
        "captum GradientShap",
    ):
        assert any(method in line for line in lines), method
    rows = [line.split(" | ") for line in lines if line.count(" | ") == len(header.split(" | ")) - 1]
    models = {row[0].split()[0] for row in rows[1:]}
    assert {"cnn", "resnet18", "bert-1x32"} <= models, models
    for row in rows[1:]:  # numbers in every numeric column
        assert all(float(cell) >= 0 for cell in row[2:]), row
    assert any("time to median rel err" in line and "shap.GradientExplainer" in line for line in lines)
    assert any("reference" in line and "points per probe" in line for line in lines)
    assert any("load average" in line for line in lines)
    assert not list((ROOT / "benchmarks" / ".cache").glob("cnn16-*"))  # --quick writes no cache
