"""The README's main example runs end to end (small settings) and leaves what it says it leaves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, read_events

EXAMPLES = ROOT / "examples"


@pytest.mark.slow
def test_quickstart_runs_and_logs_every_callback(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--logdir", str(tmp_path), "--epochs",
                           "2", "--num-train", "128"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "lightning-xai drift --store" in done.stdout
    tags = read_events(tmp_path / "quickstart")
    for tag in ("xai/gradcam/gradcam", "xai/shap/input", "xai/calibration/reliability", "xai/drift/snapshots"):
        assert tag in tags["images"], tag
    audit = read_events(tmp_path / "quickstart_audit")["scalars"]
    assert "xai/drift/spearman/reference" in audit
    from lightning_xai.cli import main

    assert main(["drift", "--store", str(tmp_path / "xai_store.sqlite"), "--out", str(tmp_path / "d.png")]) == 0
