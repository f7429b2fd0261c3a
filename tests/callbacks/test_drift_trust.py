"""AttributionDriftCallback and AttributionStore: which run a fit writes to, fast_dev_run, other probes, bad stores.

Regressions of issue 11 (items 2, 5, 6, 7 and 9): each test failed on the code before the fix.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_xai import AttributionDriftCallback, AttributionStore
from lightning_xai.demo import ShapesCNN
from tests.helpers import ROOT, shapes_loaders


def _fit(root: Path, cb: AttributionDriftCallback, seed: int = 0, size: int = 16, ckpt_path: str | None = None,
         **kw) -> Trainer:
    seed_everything(seed)
    model = ShapesCNN(width=4)
    opts = {"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": root,
            "limit_val_batches": 1, "num_sanity_val_steps": 0, "callbacks": [cb]}
    opts.update(kw)
    trainer = Trainer(**opts)
    trainer.fit(model, *shapes_loaders(size), ckpt_path=ckpt_path)
    return trainer


def _drift(store: Path | str, **kw) -> AttributionDriftCallback:
    return AttributionDriftCallback(num_samples=4, store=str(store), on_error="raise", **kw)


@pytest.fixture
def no_figures(monkeypatch):
    """Skip the drift figures (two matplotlib renders per epoch) where a test is not about them."""
    monkeypatch.setattr("lightning_xai.callbacks._emit.drift._figures", lambda *args, **kwargs: None)


# ------------------------------------------------------------------ item 2: a new fit never continues another run
def test_a_rerun_with_the_same_run_name_makes_a_new_run(tmp_path, no_figures):
    store = tmp_path / "s.sqlite"
    _fit(tmp_path, _drift(store, run="resnet-v2"), seed=0, max_epochs=2, limit_train_batches=1)
    second = _drift(store, run="resnet-v2")
    with pytest.warns(UserWarning, match=r"run 'resnet-v2' is already in .*s\.sqlite.*'resnet-v2#2'"):
        _fit(tmp_path, second, seed=1, max_epochs=2, limit_train_batches=1)
    assert second.run_name == "resnet-v2#2" and second.state_dict()["run"] == "resnet-v2#2"
    with AttributionStore(store) as s:
        assert [r.name for r in s.runs()] == ["resnet-v2", "resnet-v2#2"]
        first_run, new_run = s.snapshots("resnet-v2"), s.snapshots("resnet-v2#2")
    assert len(first_run) == 2 and len(new_run) == 2
    assert "previous" not in new_run[0].meta["against"]  # its first snapshot: nothing of its own to compare with
    assert new_run[1].meta["against"]["previous"]["run"] == "resnet-v2#2"


def test_if_exists_append_and_raise(tmp_path, no_figures):
    store = tmp_path / "s.sqlite"
    _fit(tmp_path, _drift(store, run="v"), limit_train_batches=1)
    _fit(tmp_path, _drift(store, run="v", if_exists="append"), seed=1, limit_train_batches=1)
    with AttributionStore(store) as s:
        assert [r.name for r in s.runs()] == ["v"] and len(s.snapshots("v")) == 2
    with pytest.raises(ValueError, match=r"`run`.*if_exists='raise'.*'v'"):
        _fit(tmp_path, _drift(store, run="v", if_exists="raise"), limit_train_batches=1)
    with pytest.raises(ValueError, match="`if_exists`"):
        AttributionDriftCallback(if_exists="overwrite")


def test_the_default_run_name_without_a_logger_is_unique_too(tmp_path, no_figures):
    store = tmp_path / "s.sqlite"
    for seed in (0, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _fit(tmp_path, _drift(store), seed=seed, limit_train_batches=1)
    with AttributionStore(store) as s:
        assert [r.name for r in s.runs()] == [tmp_path.name, f"{tmp_path.name}#2"]


def test_a_resume_of_the_run_appends_to_it(tmp_path, no_figures):
    store = tmp_path / "s.sqlite"
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path, _drift(store, run="r"), limit_train_batches=1)  # an older training of the same name
    first = _drift(store, run="r")
    with pytest.warns(UserWarning, match="'r#2'"):
        _fit(tmp_path, first, callbacks=[first, ckpt], enable_checkpointing=True, limit_train_batches=1)
    resumed = _drift(store, run="r")
    _fit(tmp_path, resumed, callbacks=[resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt2")],
         enable_checkpointing=True, max_epochs=2, limit_train_batches=1, ckpt_path=str(tmp_path / "ckpt/last.ckpt"))
    assert resumed.run_name == "r#2"
    audit = _drift(store, run="r#2")  # a checkpoint audit names the run that wrote the checkpoint: it appends
    Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path, limit_val_batches=1, callbacks=[audit]).validate(
        ShapesCNN(width=4), shapes_loaders()[1], ckpt_path=str(tmp_path / "ckpt/last.ckpt"))
    with AttributionStore(store) as s:
        assert [r.name for r in s.runs()] == ["r", "r#2"]
        assert [x.epoch for x in s.snapshots("r#2")] == [0, 0, 1]


# ------------------------------------------------------------------ item 5: fast_dev_run leaves the store alone
def test_fast_dev_run_writes_to_a_throwaway_store(tmp_path, no_figures):
    store = tmp_path / "s.sqlite"
    with pytest.warns(UserWarning, match=r"fast_dev_run.*throwaway store .*run 'fast_dev_run'") as record:
        _fit(tmp_path, _drift(store), fast_dev_run=True)
    assert sum("fast_dev_run" in str(w.message) and "throwaway" in str(w.message) for w in record) == 1
    assert not store.exists()  # the user's store is untouched
    record = json.loads(next(tmp_path.rglob("drift.json")).read_text())  # the code path ran
    assert record["run"] == "fast_dev_run" and record["store"] != str(store)
    assert not Path(record["store"]).parent.exists()  # removed at teardown
    AttributionStore(store).close()  # an existing store stays as it was, byte for byte
    before = store.read_bytes()
    with pytest.warns(UserWarning, match="fast_dev_run"):
        _fit(tmp_path, _drift(store), fast_dev_run=True)
    assert store.read_bytes() == before


@pytest.mark.parametrize("name", ["", "   ", "\t"])
def test_empty_run_names_are_refused(name):
    with pytest.raises(ValueError, match="`run`"):
        AttributionDriftCallback(run=name)


def test_run_names_with_dollars_are_accepted(tmp_path):
    cb = AttributionDriftCallback(run="exp_$a_b_c$", store=str(tmp_path / "s.sqlite"), num_samples=2)
    assert cb.run == "exp_$a_b_c$"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # figures: mathtext is render/'s business
        _fit(tmp_path, cb, limit_train_batches=1)
    with AttributionStore(tmp_path / "s.sqlite") as s:
        assert [r.name for r in s.runs()] == ["exp_$a_b_c$"] and len(s.snapshots("exp_$a_b_c$")) == 1


# ------------------------------------------------------------------ item 7: snapshots of another probe
@pytest.mark.parametrize("first_steps", [1, 4])  # the other probe's snapshots before and after the new steps
def test_a_run_continued_on_another_probe_never_mixes_them(tmp_path, first_steps, monkeypatch):
    store = tmp_path / "s.sqlite"
    with monkeypatch.context() as patch:
        patch.setattr("lightning_xai.callbacks._emit.drift._figures", lambda *args, **kwargs: None)
        _fit(tmp_path, _drift(store, run="x"), limit_train_batches=first_steps)
    cb = AttributionDriftCallback(num_samples=4, store=str(store), run="x", if_exists="append")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _fit(tmp_path, cb, size=24, max_epochs=2, limit_train_batches=2)
    messages = [str(w.message) for w in record if "lightning_xai" in str(w.message)]
    assert not any("stack expects" in m for m in messages), messages
    assert sum("taken on another probe" in m for m in messages) == 1, messages
    with AttributionStore(store) as s:
        snaps = s.snapshots("x")
    old = min(snaps, key=lambda x: x.id)
    new = [x for x in snaps if x.probe_fingerprint != old.probe_fingerprint]
    assert len(snaps) == 3 and len(new) == 2
    later = max(new, key=lambda x: x.id)
    assert later.meta["against"]["previous"]["global_step"] == min(new, key=lambda x: x.id).global_step
    assert later.meta["against"]["first"]["global_step"] == min(new, key=lambda x: x.id).global_step
    pngs = {p.name for p in tmp_path.rglob("*.png")}
    assert any("snapshots" in p for p in pngs) and any("timeline" in p for p in pngs)


def test_a_resume_with_another_num_samples_says_so_and_draws(tmp_path, monkeypatch):
    store, ckpt = tmp_path / "s.sqlite", ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = _drift(store, run="n")
    with monkeypatch.context() as patch:
        patch.setattr("lightning_xai.callbacks._emit.drift._figures", lambda *args, **kwargs: None)
        _fit(tmp_path, first, callbacks=[first, ckpt], enable_checkpointing=True, limit_train_batches=1)
    resumed = AttributionDriftCallback(num_samples=2, store=str(store), run="n")  # another probe, same run
    with pytest.warns(RuntimeWarning, match="taken on another probe") as record:
        _fit(tmp_path, resumed, max_epochs=2, limit_train_batches=1, ckpt_path=str(tmp_path / "ckpt/last.ckpt"))
    assert not any("stack expects" in str(w.message) for w in record)
    with AttributionStore(store) as s:
        assert [r.name for r in s.runs()] == ["n"] and [x.epoch for x in s.snapshots("n")] == [0, 1]
    assert any("snapshots" in p.name for p in tmp_path.rglob("*.png"))


# ------------------------------------------------------------------ item 9: stores that cannot work, and where
def _other_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    return path


@pytest.mark.parametrize("kind", ["directory", "foreign sqlite", "text file", "under a file"])
def test_a_store_that_cannot_work_is_refused_in_setup(tmp_path, kind):
    (tmp_path / "notes.txt").write_text("hello\n")
    path = {"directory": tmp_path, "foreign sqlite": _other_sqlite(tmp_path / "music.db"),
            "text file": tmp_path / "notes.txt", "under a file": tmp_path / "notes.txt" / "x.sqlite"}[kind]
    cb = AttributionDriftCallback(num_samples=2, store=str(path))  # on_error="warn": still refused, up front
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match=r"`store`") as err:
        _fit(tmp_path, cb, limit_train_batches=1)
    assert str(path) in str(err.value)
    assert any(entry.name == "setup" for entry in err.traceback)  # refused before training, not after an epoch
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_open_errors_name_the_store(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    for path in (tmp_path / "notes.txt" / "x.sqlite", Path("/proc/lightning_xai_test/x.sqlite")):
        with pytest.raises(OSError, match=re.escape(str(path))):
            AttributionStore(path)


_FULL_DISK = r"""
import resource, signal, sys, types, pathlib
root, db = sys.argv[1:3]
for name in ("lightning_xai", "lightning_xai.sinks"):
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(pathlib.Path(root, *name.split(".")))]
    sys.modules[name] = pkg
import numpy as np
from lightning_xai.sinks.store import AttributionStore

store = AttributionStore(db)
store.write("r", {"m": np.zeros((2, 4), np.float32)}, epoch=0, global_step=0, method="m", probe_fingerprint="f")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    store.write("r", {"m": np.ones((64, 64, 64), np.float32)}, epoch=1, global_step=1, method="m",
                probe_fingerprint="f", dtype="float32")
except Exception as err:
    print(type(err).__name__, err)
"""


def test_a_full_disk_error_names_the_store(tmp_path):
    script = tmp_path / "full.py"
    script.write_text(_FULL_DISK)
    db = tmp_path / "store.sqlite"
    done = subprocess.run([sys.executable, str(script), str(ROOT), str(db)], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "OperationalError" in done.stdout and str(db) in done.stdout, done.stdout
