"""Smoke run of benchmarks/ddp.py: 1 and 2 processes explain the same probe and the table says so."""

from __future__ import annotations

import pytest

from tests.helpers import run_benchmark


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_benchmark_runs() -> None:
    lines = run_benchmark("ddp.py", "--quick", timeout=600)
    rows = {line.split("|")[1].strip(): line.split("|") for line in lines if line.startswith("| ")}
    assert {"gradcam", "attribution", "shap"} <= set(rows)
    for name in ("gradcam", "attribution", "shap"):
        one, two, ratio, diff = (float(rows[name][i]) for i in (3, 4, 5, 6))
        assert one > 0 and two > 0 and ratio > 0
        assert diff <= 1e-5, (name, diff)  # the split maps equal one process's
    assert rows["gradcam"][2].strip() == "yes" and rows["shap"][2].strip() == "no"
