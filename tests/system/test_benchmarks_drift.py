"""Smoke run of benchmarks/drift.py: it starts, runs once on tiny maps and prints its table."""

from __future__ import annotations

from tests.helpers import run_benchmark


def test_drift_benchmark_runs() -> None:
    lines = run_benchmark("drift.py", "--quick")
    header = next(line for line in lines if line.startswith("| operation"))
    for column in ("maps", "seconds", "MB on disk", "vs scipy"):
        assert column in header
    for operation in ("store.write", "store.load", "drift_metrics (all 6)", "spearman", "scipy.stats.spearmanr loop",
                      "store.compare"):
        assert any(line.startswith(f"| {operation} ") for line in lines), operation
    assert any("float16" in line for line in lines) and any("float32" in line for line in lines)
    assert any(line.startswith("load average") for line in lines)
