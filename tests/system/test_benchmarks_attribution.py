"""Smoke run of benchmarks/attribution.py: it runs once on tiny sizes and prints its tables (no timing asserts)."""

from __future__ import annotations

from tests.helpers import ROOT, run_benchmark


def _table(lines: list[str], title: str) -> list[list[str]]:
    """The rows (cells) of the table printed under ``== title``, its header first."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {title}"))
    rows = []
    for line in lines[start + 1:]:
        if " | " in line:
            rows.append([cell.strip() for cell in line.split(" | ")])
        elif not line.startswith("-"):  # the table's rule is "---+---"; anything else ends it
            break
    return rows


def test_attribution_benchmark_runs() -> None:
    lines = run_benchmark("attribution.py", "--quick", "--threads", "1")
    ig = _table(lines, "integrated gradients")
    assert ig[0][:4] == ["model", "engine", "steps/probe", "cpu s"] and "peak MiB" in ig[0]
    assert {row[0].split()[0] for row in ig[1:]} == {"cnn", "bert-1x32"}
    assert any(row[1].startswith("ours completeness_tol=0.01") for row in ig[1:])
    assert any(row[1] == "captum n_steps=8" for row in ig[1:])
    lime = _table(lines, "LIME on images")
    assert {"x floor", "IoU median", "peak MiB"} <= set(lime[0])
    assert [row[1] for row in lime[1:]] == ["floor (forwards only)", "ours lime", "lime LimeImageExplainer"]
    assert all(0 <= float(row[lime[0].index("IoU median")]) <= 1 for row in lime[2:])
    ablation = _table(lines, "occlusion and feature ablation")
    assert {(row[0].split()[0], row[1]) for row in ablation[1:]} == {
        (model, method) for model in ("cnn", "bert-1x32") for method in ("occlusion", "feature_ablation")}
    for table in (ig, lime, ablation):  # a number in every cpu-seconds column
        columns = [i for i, name in enumerate(table[0]) if "cpu s" in name]
        assert columns and all(float(row[i]) >= 0 for row in table[1:] for i in columns)
    targets = _table(lines, "targets")
    assert targets[0] == ["target", "measured", "met"]
    assert any(row[0].startswith("LIME cnn") and "IoU" in row[0] for row in targets)
    assert all(row[2] in ("yes", "no", "ladder only", "-") for row in targets[1:])
    assert any("load average" in line for line in lines)
    cache = ROOT / "benchmarks" / ".cache"
    assert not [*cache.glob("cnn16-*"), *cache.glob("bert-1x32-*")]  # --quick writes no cache
