"""Smoke run of benchmarks/overhead.py: it starts, fits bare and with a callback both ways, and prints its table."""

from __future__ import annotations

from tests.helpers import run_benchmark


def test_overhead_benchmark_runs() -> None:
    lines = run_benchmark("overhead.py", "--quick", "--configs", "bare,gradcam", "--figures", "background,inline")
    header = next(line for line in lines if line.startswith("| callbacks"))
    for column in ("wall s", "x bare", "CPU s (this process)", "CPU s (drawing process)", "PNGs"):
        assert column in header
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in lines if line.startswith("| ")}
    assert {("bare", "-"), ("gradcam", "background"), ("gradcam", "inline")} <= set(rows)
    pngs = {key: int(line.split("|")[-2]) for key, line in rows.items() if key[0] != "callbacks"}
    assert pngs[("bare", "-")] == 0 and pngs[("gradcam", "background")] == pngs[("gradcam", "inline")] == 2
    drawing = float(rows[("gradcam", "background")].split("|")[6])
    assert drawing > 0 and float(rows[("gradcam", "inline")].split("|")[6]) == 0  # where the figures were drawn
    assert any(line.startswith("load average") for line in lines)
