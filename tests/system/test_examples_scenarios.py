"""The scenario examples (audio spectrograms, video clips) run end to end with tiny settings, log their figures and
print their ground-truth numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, read_events

EXAMPLES = ROOT / "examples"
NUMBER = r"(\d+\.\d+)"


def run_example(script: str, tmp_path: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / script),
            "--logdir",
            str(tmp_path),
            "--epochs",
            "1",
            "--num-train",
            "96",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"TensorBoard logs in {tmp_path}" in done.stdout
    return done.stdout


@pytest.mark.slow
def test_audio_spectrogram_example(tmp_path):
    out = run_example("audio_spectrogram.py", tmp_path)
    images = read_events(tmp_path / "audio_spectrogram")["images"]
    for tag in ("xai/shap/spectrogram", "xai/gradcam/gradcam", "xai/calibration/reliability"):
        assert tag in images, tag
    share, area = map(float, re.search(rf"^mean\s+{NUMBER}\s+{NUMBER}\s*$", out, re.MULTILINE).groups())
    assert 0.0 <= share <= 1.0 and 0.0 < area < 0.05  # the burst's box is a small part of the spectrogram
    assert (
        len(re.findall(rf"^\s+\d+\s+(low|mid|high) .*kHz\s+{NUMBER}\s+{NUMBER}\s*$", out, re.MULTILINE)) == 4
    )
    assert re.search(rf"Grad-CAM energy in the box \(mean over probes\): {NUMBER}", out)


@pytest.mark.slow
def test_video_clips_example(tmp_path):
    out = run_example("video_clips.py", tmp_path)
    images = read_events(tmp_path / "video_clips")["images"]
    for tag in ("xai/gradcam/gradcam", "xai/shap/pixel_values", "xai/calibration/reliability"):
        assert tag in images, tag
    frames = re.findall(rf"^\s+(\d+)\s+{NUMBER}\s+{NUMBER}\s*$", out, re.MULTILINE)
    assert [int(t) for t, _, _ in frames] == list(range(6))  # one line per frame
    for _, energy, area in frames:
        assert 0.0 <= float(energy) <= 1.0 and 0.02 < float(area) < 0.5
    assert re.search(rf"^all\s+{NUMBER}\s+{NUMBER}\s*$", out, re.MULTILINE)
