"""Smoke runs of the benchmark scripts: they start, run once on tiny sizes and print their table."""

from __future__ import annotations

from tests.helpers import run_benchmark


def test_gradcam_benchmark_runs() -> None:
    lines = run_benchmark("gradcam.py", "--quick", "--threads", "1", "--repeats=1")
    header = next(line for line in lines if line.startswith("model"))
    for column in ("method", "impl", "seconds", "x floor", "speed-up vs pgc", "max abs diff"):
        assert column in header
    assert any("lightning_xai" in line and "gradcam++" in line for line in lines)
    assert any("pytorch_grad_cam" in line for line in lines)


def test_attention_benchmark_runs() -> None:
    lines = run_benchmark("attention.py", "--quick", "--threads", "1", "--repeats=1")
    header = next(line for line in lines if line.startswith("model"))
    for column in ("method", "impl", "seconds", "x floor", "max abs diff"):
        assert column in header
    ours = [line for line in lines if "lightning_xai" in line]
    assert len(ours) == 4 and all(float(line.split("|")[-1]) < 1e-5 for line in ours)  # the floor's scores
