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
        explain_one, explain_two, _, step_one, step_two, _, diff = (float(rows[name][i]) for i in range(2, 9))
        assert 0 < explain_one <= step_one and 0 < explain_two <= step_two
        assert diff <= 1e-5, (name, diff)  # the split maps equal one process's
