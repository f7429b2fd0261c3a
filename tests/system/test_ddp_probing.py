"""ProbingCallback under strategy="ddp" with 2 CPU processes: no hang, written once, the numbers of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_xai.sinks import read_manifest
from tests.helpers import ROOT, scalar_values

SCRIPT = Path(__file__).with_name("ddp_probing_script.py")


def _run(out: Path, devices: int, strategy: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPT.parent)])}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), strategy], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_probes_gather_activations_and_match_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    _run(single, 1, "auto")
    _run(ddp, 2, "ddp")
    for phase, n in (("validate", 1), ("fit", 2)):
        records = [r for m in (ddp / phase).rglob("manifest.jsonl") for r in read_manifest(m)]
        assert len(records) == n, records  # once per epoch, not once per rank
    one, two = (json.loads(next((d / "validate").rglob("probing.json")).read_text()) for d in (single, ddp))
    assert two["indices"] == one["indices"] and len(one["indices"]) == 90
    for layer, p in one["targets"]["label"]["layers"].items():  # every probed row, gathered back into probe order
        q = two["targets"]["label"]["layers"][layer]
        for key in ("accuracy", "accuracy_std", "control_accuracy", "selectivity"):
            assert q[key] == pytest.approx(p[key], abs=1e-6), (layer, key)
        assert q["fold_accuracy"] == pytest.approx(p["fold_accuracy"], abs=1e-6)
    metrics = [json.loads((d / f"callback_metrics_rank{r}.json").read_text()) for d, r in ((single, 0), (ddp, 0),
                                                                                          (ddp, 1))]
    assert "xai/probing/carrier/accuracy" in metrics[0] and metrics[2] == metrics[1]  # every rank: rank zero's values
    assert all(metrics[0][k] > 0 for k in metrics[0] if k.endswith("/seconds"))  # how long each step took ...
    timeless = [{k: v for k, v in m.items() if not k.endswith("/seconds")} for m in metrics]
    assert timeless[1] == pytest.approx(timeless[0], abs=1e-6)  # ... and every number the same
    fit_one, fit_two = ({s: v for s, v in scalar_values(d / "fit", "xai/probing/head/accuracy")} for d in (single, ddp))
    assert len(fit_two) == 2 and fit_two.keys() == fit_one.keys()
