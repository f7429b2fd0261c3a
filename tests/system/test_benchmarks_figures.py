"""Smoke runs of the figure-cost benchmarks: benchmarks/figures.py, benchmarks/png_encode.py (both encoders give the
same pixels) and benchmarks/event_crc.py (both checksums)."""

from __future__ import annotations

from tests.helpers import run_benchmark

FIGURES = {"gradcam", "gradcam++", "reliability", "confidently_wrong", "snapshots", "input", "timeline"}


def test_figures_benchmark_times_every_quickstart_figure() -> None:
    lines = run_benchmark("figures.py", "--quick")
    rows = [line.split("|") for line in lines if line.startswith("| ") and not line.startswith("| figure")]
    assert {r[1].strip().rsplit("/", 1)[-1] for r in rows} == FIGURES
    assert all(float(r[5]) > 0 and float(r[7]) > 0 for r in rows)  # total seconds and PNG KiB


def test_png_encode_benchmark_checks_the_pixels() -> None:
    lines = run_benchmark("png_encode.py", "--quick")
    rows = [line.split("|") for line in lines if line.startswith("| ") and not line.startswith("| figure")]
    assert {r[1].strip() for r in rows} == FIGURES
    assert all(r[7].strip() == "True" for r in rows)  # ours decodes to Pillow's pixels
    assert any(line.startswith("one epoch's figures: Pillow") for line in lines)


def test_event_crc_benchmark_runs_both_checksums() -> None:
    lines = run_benchmark("event_crc.py", "--images", "2", "--kib", "8", "--repeats", "1")
    names = {line.split("|")[1].strip() for line in lines if line.startswith("| ") and "seconds" not in line}
    assert names == {"tensorboard (Python)", "google-crc32c (C)"}
    assert any(line.startswith("ratio Python / C:") for line in lines)
