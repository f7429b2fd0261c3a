"""AttributionDriftCallback end to end: snapshots in the store, drift scalars, figures, retrains, alerts, resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lightning_xai import AttributionDriftCallback, AttributionStore
from lightning_xai.demo import ShapesCNN
from tests.helpers import TextModel, Tokens, read_events, scalar_values, tiny_trainer

MAP_METRICS = ("spearman", "ndcg", "topk_iou", "cosine", "com_shift", "focus_radius_change")


def _fit(tmp_path, name, dm, seed=0, epochs=3, **kw):
    seed_everything(seed)
    cb = AttributionDriftCallback(num_samples=4, store=str(tmp_path / "store.sqlite"), run=name, on_error="raise",
                                  **kw)
    tiny_trainer(tmp_path / name, [cb], max_epochs=epochs).fit(ShapesCNN(), datamodule=dm)
    return cb


def test_fit_stores_a_snapshot_per_epoch_and_logs_drift(tmp_path, shapes_dm):
    cb = _fit(tmp_path, "a", shapes_dm)
    with AttributionStore(tmp_path / "store.sqlite") as store:
        snaps = store.snapshots("a")
        assert [s.epoch for s in snaps] == [0, 1, 2] and all(s.method == "gradcam" for s in snaps)
        assert store.load("a").arrays["gradcam"].shape == (4, 32, 32)
        assert len({s.model_hash for s in snaps}) == 3  # the weights moved, and each snapshot says which
    ev = read_events(tmp_path / "a")
    for metric in MAP_METRICS:
        assert ev["scalars"][f"xai/drift/{metric}/previous"] == ev["scalars"][f"xai/drift/{metric}/first"]
        assert len(ev["scalars"][f"xai/drift/{metric}/previous"]) == 2  # epochs 1 and 2 have a predecessor
    assert {"xai/drift/timeline", "xai/drift/snapshots"} <= set(ev["images"])
    # epoch 1 against the first snapshot is epoch 1 against the previous one
    prev, first = (scalar_values(tmp_path / "a", f"xai/drift/spearman/{k}") for k in ("previous", "first"))
    assert prev[0] == first[0] and -1 <= prev[1][1] <= 1
    drift_json = sorted((tmp_path / "a").rglob("drift.json"))[-1]
    record = json.loads(drift_json.read_text())
    assert record["run"] == "a" and len(record["per_probe"]["previous"]["spearman"]) == 4
    assert cb.state_dict()["run"] == "a"


def test_retrains_with_other_seeds_drift_and_the_same_seed_does_not(tmp_path, shapes_dm):
    _fit(tmp_path, "v1", shapes_dm, seed=0, epochs=2)
    _fit(tmp_path, "v1-again", shapes_dm, seed=0, epochs=2, reference_run="v1")
    _fit(tmp_path, "v2", shapes_dm, seed=1, epochs=2, reference_run="v1")
    same = scalar_values(tmp_path / "v1-again", "xai/drift/spearman/reference")
    assert [v for _, v in same] == [1.0, 1.0]  # a deterministic retrain: exactly no drift
    assert [v for _, v in scalar_values(tmp_path / "v1-again", "xai/drift/com_shift/reference")] == [0.0, 0.0]
    other = scalar_values(tmp_path / "v2", "xai/drift/spearman/reference")
    assert len(other) == 2 and all(v < 0.99 for _, v in other)
    with AttributionStore(tmp_path / "store.sqlite") as store:
        assert [r.name for r in store.runs()] == ["v1", "v1-again", "v2"]
        itself = store.compare(("v2", None), ("v2", None), key="gradcam")
        assert itself["spearman"].tolist() == [1.0] * 4 and itself["com_shift"].tolist() == [0.0] * 4
        assert store.load("v2").info.meta["against"]["reference"]["run"] == "v1"


def test_checkpoint_audit_and_resumed_fit_append_to_the_run(tmp_path, shapes_dm):
    seed_everything(0)
    store = str(tmp_path / "store.sqlite")
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_cb = AttributionDriftCallback(num_samples=3, store=store, on_error="raise")  # run named after the logger
    tiny_trainer(tmp_path / "fit", [fit_cb, ckpt], enable_checkpointing=True, max_epochs=1).fit(
        ShapesCNN(), datamodule=shapes_dm)
    run = fit_cb.run_name
    assert run == "tb/version_0"
    resumed = AttributionDriftCallback(num_samples=3, store=store, on_error="raise")
    tiny_trainer(tmp_path / "resume", [resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt2")],
                 enable_checkpointing=True, max_epochs=2).fit(ShapesCNN(), datamodule=shapes_dm,
                                                              ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.run_name == run  # from the checkpoint's callback state, not the new logger's version
    audit = AttributionDriftCallback(num_samples=3, store=store, run=run, on_error="raise")
    tiny_trainer(tmp_path / "audit", [audit]).validate(ShapesCNN(), datamodule=shapes_dm,
                                                       ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    with AttributionStore(store) as s:
        snaps = s.snapshots(run)
    # ordered by global step: the fit's epoch 0, the audit of that checkpoint (same step), the resumed epoch 1
    assert [(x.epoch, x.checkpoint_path) for x in snaps] == [(0, None), (0, str(tmp_path / "ckpt" / "last.ckpt")),
                                                             (1, None)]
    assert snaps[1].model_hash == snaps[0].model_hash  # the audit saw the checkpoint's weights
    assert scalar_values(tmp_path / "audit", "xai/drift/spearman/first")[0][1] == 1.0


def test_alert_names_the_epoch_and_the_probes(tmp_path, shapes_dm):
    with pytest.warns(RuntimeWarning, match=r"(?s)drift alert.*epoch 1.*vs previous.*moved most: #\d+") as record:
        _fit(tmp_path, "a", shapes_dm, epochs=2, alert_below=1.0)
    assert not any("vs first" in str(w.message) for w in record)  # 'first' does not alert by default
    assert "xai/drift/alert/text_summary" in read_events(tmp_path / "a")["tensors"]


def test_a_missing_reference_run_warns_and_still_stores(tmp_path, shapes_dm):
    seed_everything(0)
    cb = AttributionDriftCallback(num_samples=2, store=str(tmp_path / "s.sqlite"), run="b", reference_run="nope")
    with pytest.warns(RuntimeWarning, match="reference_run='nope' is not in the store"):
        tiny_trainer(tmp_path, [cb]).fit(ShapesCNN(), datamodule=shapes_dm)
    with AttributionStore(tmp_path / "s.sqlite") as store:
        assert len(store.snapshots("b")) == 1


def test_text_model_drift_with_shap(tmp_path):
    loader = DataLoader(Tokens(32), batch_size=8)
    seed_everything(0)
    cb = AttributionDriftCallback(method="shap", num_samples=3, store=str(tmp_path / "s.sqlite"), run="t",
                                  method_kwargs={"n_background": 8, "nsamples": 16, "max_nsamples": 32},
                                  on_error="raise")
    tiny_trainer(tmp_path, [cb], max_epochs=2).fit(TextModel(), loader, loader)
    ev = read_events(tmp_path)
    assert "xai/drift/top_token_overlap/previous" in ev["scalars"]
    assert "xai/drift/com_shift/previous" not in ev["scalars"]
    with AttributionStore(tmp_path / "s.sqlite") as store:
        snap = store.load("t")
    assert snap.arrays["input_ids"].shape == (3, 12)
    assert snap.arrays["keep/input_ids"].dtype == torch.bool and not snap.arrays["keep/input_ids"][:, 10:].any()


@pytest.mark.parametrize(("kwargs", "match"), [({"method": "no-such-method"}, "`method`.*gradcam"),
                                               ({"alert_below": 2.0}, "`alert_below`"),
                                               ({"run": ""}, "`run`"),
                                               ({"method": "shap", "target_layer": "x"}, "`target_layer`")])
def test_constructor_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttributionDriftCallback(**kwargs)


def test_drift_scalars_equal_the_store_comparison(tmp_path, shapes_dm):
    _fit(tmp_path, "a", shapes_dm, epochs=2)
    with AttributionStore(tmp_path / "store.sqlite") as store:
        first, last = store.snapshots("a")
        metrics = store.compare(("a", first.global_step), ("a", last.global_step), key="gradcam")
    logged = dict(scalar_values(tmp_path / "a", "xai/drift/ndcg/previous"))
    np.testing.assert_allclose(logged[last.global_step], float(metrics["ndcg"].mean()), rtol=1e-6)


def test_cli_prints_runs_and_their_drift_and_writes_a_png(tmp_path, shapes_dm, capsys):
    import subprocess
    import sys

    from lightning_xai.cli import main

    _fit(tmp_path, "v1", shapes_dm, seed=0, epochs=2)
    _fit(tmp_path, "v2", shapes_dm, seed=1, epochs=2, reference_run="v1")
    out = tmp_path / "drift.png"
    assert main(["drift", "--store", str(tmp_path / "store.sqlite"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| v1 " in text and "| v2 " in text and "reference run" in text
    with AttributionStore(tmp_path / "store.sqlite") as store:
        v2 = store.load("v2")
        expected = float(store.compare(("v1", None), ("v2", None), key="gradcam")["spearman"].mean())
    row = next(line for line in text.splitlines() if line.startswith("| v2 "))
    assert f"{v2.info.meta['drift']['reference']['spearman']:.3f}" in row  # as logged during the fit
    pair = next(line for line in text.splitlines() if line.startswith("| v1 ") and "v2" in line)
    assert f"{expected:.3f}" in pair
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["drift", "--store", str(tmp_path / "store.sqlite"), "--runs", "v3"]) == 2
    assert "not in" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "lightning_xai.cli", "drift", "--store", str(tmp_path / "store.sqlite"),
                           "--reference", "v1", "--metric", "ndcg", "--out", str(tmp_path / "b.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ndcg" in done.stdout, done.stderr
