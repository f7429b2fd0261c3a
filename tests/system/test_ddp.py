"""Under strategy="ddp" with 2 CPU processes: no hang, artifacts written once, same numbers as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_xai.sinks import read_manifest
from tests.helpers import ROOT, read_events

SCRIPT = Path(__file__).with_name("ddp_gradcam_script.py")


def _run(out: Path, devices: int, strategy: str) -> None:
    # the checkout under test, not whatever lightning_xai is installed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPT.parent)])}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), strategy], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_two_processes_write_once_and_match_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    _run(single, 1, "auto")
    _run(ddp, 2, "ddp")
    for phase, n in (("validate", 11), ("fit", 4)):  # validate: gradcam 2, calibration, shap, drift, attribution 6
        records = [r for m in (ddp / phase).rglob("manifest.jsonl") for r in read_manifest(m)]
        assert len(records) == n, records  # once per method/epoch, not once per rank
    images = read_events(ddp / "validate")["images"]
    assert images["xai/gradcam/gradcam"] == [0] and images["xai/gradcam/scorecam"] == [0]
    for method in ("gradcam", "scorecam"):
        a = np.load(next((single / "validate").rglob(f"gradcam_{method}.npy")))
        b = np.load(next((ddp / "validate").rglob(f"gradcam_{method}.npy")))
        np.testing.assert_allclose(a, b, atol=1e-5)
    a, b = (np.load(next((d / "validate").rglob("shap_values.npz")))["input"] for d in (single, ddp))
    np.testing.assert_allclose(a, b, atol=1e-5)
    for method in ("saliency", "occlusion", "smoothgrad", "lime", "deeplift"):  # all but DeepLift split
        a, b = (np.load(next((d / "validate").rglob(f"attribution_{method}.npz")))["input"] for d in (single, ddp))
        assert a.shape == (4, 3, 32, 32)
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=method)
    # the probe split: each rank explained half the rows with the splittable methods (SHAP too), all otherwise
    rows = [dict(map(tuple, json.loads((ddp / f"rows_rank{r}.json").read_text()))) for r in (0, 1)]
    one = dict(map(tuple, json.loads((single / "rows_rank0.json").read_text())))
    for method, whole in (("gradcam", 4), ("scorecam", 4), ("saliency", 4), ("occlusion", 4), ("smoothgrad", 4),
                          ("lime", 4), ("deeplift", 4), ("shap", 2)):
        assert one[method] == whole, (method, one)
        split = whole if method == "deeplift" else whole // 2
        assert rows[0][method] == rows[1][method] == split, (method, rows)
    # gathered to rank zero only: rank zero holds the whole probe's explanation, rank 1 its own share
    held = [dict(map(tuple, json.loads((ddp / f"joined_rank{r}.json").read_text()))) for r in (0, 1)]
    for method in ("gradcam", "saliency", "occlusion", "lime", "shap"):
        whole = 2 if method == "shap" else 4
        assert held[0][method] == whole and held[1][method] == whole // 2, (method, held)
    assert held[0]["deeplift"] == held[1]["deeplift"] == 4  # not split: every rank explains the whole probe
    from lightning_xai import AttributionStore

    with AttributionStore(single / "store.sqlite") as s1, AttributionStore(ddp / "store.sqlite") as s2:
        assert [len(s2.snapshots(run)) for run in ("validate", "fit")] == [1, 2]  # one writer
        np.testing.assert_allclose(s1.load("validate").arrays["gradcam"], s2.load("validate").arrays["gradcam"],
                                   atol=1e-3)  # float16 storage
    metrics = [json.loads((d / f"callback_metrics_rank{r}.json").read_text()) for d, r in ((single, 0), (ddp, 0),
                                                                                          (ddp, 1))]
    assert "xai/calibration/ece" in metrics[0] and "xai/gradcam/gradcam/nonfinite" in metrics[0]
    assert metrics[2] == metrics[1]  # the same values on every rank (sync_dist semantics)
    assert set(metrics[1]) == set(metrics[0])
    for key in ("xai/calibration/ece", "xai/calibration/brier", "xai/shap/completeness/mean"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-5), key
    one = json.loads(next((single / "validate").rglob("calibration.json")).read_text())
    two = json.loads(next((ddp / "validate").rglob("calibration.json")).read_text())
    assert two["counts"] == one["counts"] and sum(one["counts"]) == 64  # bins summed over ranks
    for key in ("ece", "mce", "rmsce", "brier", "nll", "accuracy", "ace"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], abs=1e-6), key
    # the reservoir, the kept logits and the gallery of every rank: ACE (above), the temperature and the gallery
    # of one process, not of rank zero's half
    for key in ("temperature", "ece_after_temperature"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-3, abs=1e-5), key
    # the gallery's maps: computed on the ranks that held its mistakes (one process: rank zero, all of them)
    logs = [json.loads((ddp / f"gallery_rank{r}.json").read_text()) for r in (0, 1)]
    held_by = logs[0]["held_by"]
    assert held_by == logs[1]["held_by"] and len(held_by) == 4, logs  # the same merged gallery on both ranks
    assert set(held_by) == {0, 1}, held_by  # both ranks hold some of it (the data are seeded)
    for rank, log in enumerate(logs):  # each mistake explained alone, on the rank that held it
        assert log["explained"] == [1] * held_by.count(rank), (rank, logs)
    # the same in the explainers' own record: the gallery's Grad-CAM rows, per rank, sum to the gallery's size
    gallery_rows = [[n for name, n in json.loads((d / f"rows_rank{r}.json").read_text()) if name == "gallery/gradcam"]
                    for d, r in ((ddp, 0), (ddp, 1), (single, 0))]
    assert [sum(g) for g in gallery_rows] == [held_by.count(0), held_by.count(1), 4], (gallery_rows, held_by)
    assert json.loads((single / "gallery_rank0.json").read_text())["explained"] == [1, 1, 1, 1]  # one process too
    a, b = ((d / "validate").rglob("confidently_wrong.png") for d in (single, ddp))
    assert next(a).read_bytes() == next(b).read_bytes()  # the same 4 mistakes, explained alike
