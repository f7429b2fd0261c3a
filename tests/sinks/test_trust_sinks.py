"""Issue 11 (trust): artifacts are never overwritten, figures never take the data with them, write errors name
the file, names stay inside the log dir, warnings carry the user's frame, scalars reach trainer.callback_metrics."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback

from lightning_xai import GradCAMCallback
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import ArtifactSink, Event
from lightning_xai.sinks.files import append_manifest, atomic_write_bytes, read_manifest
from tests.helpers import ROOT, shapes_loaders


def _model(seed: int) -> ShapesCNN:
    seed_everything(seed)
    return ShapesCNN(width=4)


def _trainer(root: Path, callbacks: list, **kw) -> Trainer:
    opts = dict(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=str(root), callbacks=callbacks,
                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                num_sanity_val_steps=0)
    opts.update(kw)
    return Trainer(**opts)


# ---------------------------------------------------------------------------------------------- 1. no overwrite
def test_two_runs_in_one_log_dir_keep_their_own_artifacts(tmp_path):
    tr, va = shapes_loaders()
    for seed in (0, 1):
        _trainer(tmp_path, [GradCAMCallback(num_samples=4, on_error="raise")]).fit(_model(seed), tr, va)
    records = list(read_manifest(tmp_path / "xai" / "manifest.jsonl"))
    assert len(records) == 2
    files = [r["files"] for r in records]
    npys = [next(f for f in fs if f.endswith(".npy")) for fs in files]
    assert npys[0] != npys[1]  # today both name gradcam/fit-epoch=0-step=4/gradcam_gradcam.npy
    assert npys[0] == "gradcam/fit-epoch=0-step=4/gradcam_gradcam.npy"
    assert npys[1] == "gradcam/fit-epoch=0-step=4-v1/gradcam_gradcam.npy"
    assert records[0]["model_hash"] != records[1]["model_hash"]
    maps = [np.load(tmp_path / "xai" / f) for f in npys]
    assert not np.array_equal(maps[0], maps[1])  # run 1's maps are still there, next to run 2's


def _claim(args: tuple[str, int]) -> str:
    root, i = args
    sink = ArtifactSink([], root, Event("gradcam", "fit", 0, 4, model_hash=f"h{i}"))
    sink.array("maps", np.full((2, 2), i, dtype=np.float32))
    sink.commit(method="gradcam")
    return str(sink.folder)


def test_two_processes_never_share_a_folder_and_lose_no_manifest_line(tmp_path):
    with mp.get_context("fork").Pool(2) as pool:
        folders = pool.map(_claim, [(str(tmp_path), i) for i in range(8)])
    assert len(set(folders)) == 8
    records = list(read_manifest(tmp_path / "xai" / "manifest.jsonl"))
    assert sorted(r["model_hash"] for r in records) == sorted(f"h{i}" for i in range(8))
    for r in records:  # each line lists the folder holding that writer's own array
        (npy,) = r["files"]
        assert np.load(tmp_path / "xai" / npy)[0, 0] == int(r["model_hash"][1:])


def _append_many(args: tuple[str, int]) -> None:
    path, writer = args
    for i in range(200):
        append_manifest(path, {"writer": writer, "i": i, "pad": "x" * 300})


def test_manifest_append_is_safe_for_two_writers(tmp_path):
    path = str(tmp_path / "manifest.jsonl")
    with mp.get_context("fork").Pool(2) as pool:
        pool.map(_append_many, [(path, 0), (path, 1)])
    records = list(read_manifest(path))
    assert len(records) == 400  # an atomic rewrite loses lines here
    assert {(r["writer"], r["i"]) for r in records} == {(w, i) for w in (0, 1) for i in range(200)}


def test_a_line_cut_short_by_a_crash_costs_only_itself(tmp_path):
    path = tmp_path / "manifest.jsonl"
    append_manifest(path, {"a": 1})
    with open(path, "ab") as fh:
        fh.write(b'{"a": 2, "cut')  # the writer died here
    append_manifest(path, {"a": 3})
    assert [r["a"] for r in read_manifest(path)] == [1, 3]


# ------------------------------------------------------------------------- 6. literal strings, data before figures
def test_dollar_signs_in_class_names_are_drawn_literally(tmp_path):
    tr, va = shapes_loaders()
    cb = GradCAMCallback(num_samples=4, class_names=["x_1", "$x_1_2$", "a\\b"], on_error="raise")
    _trainer(tmp_path, [cb]).fit(_model(0), tr, va)  # today: ValueError ... Double subscript
    (folder,) = (tmp_path / "xai" / "gradcam").iterdir()
    assert {p.name for p in folder.iterdir()} >= {"gradcam.png", "gradcam_gradcam.npy", "summary_gradcam.json"}


def test_a_failing_figure_keeps_the_arrays_and_json(tmp_path):
    sink = ArtifactSink([], str(tmp_path), Event("gradcam", "fit", 0, 4))

    def broken():
        raise RuntimeError("no figure today")

    sink.figure("broken", broken)
    sink.figure("also_broken", lambda: 1 / 0)
    sink.array("maps", np.zeros((2, 2), dtype=np.float32))
    sink.json("summary", {"a": 1})
    with pytest.warns(RuntimeWarning) as caught:
        record = sink.commit(method="gradcam")
    messages = [str(w.message) for w in caught]
    assert any("xai/gradcam/broken" in m and "no figure today" in m for m in messages)
    assert any("xai/gradcam/also_broken" in m and "ZeroDivisionError" in m for m in messages)  # each on its own
    assert sorted(record["files"]) == ["gradcam/fit-epoch=0-step=4/maps.npy", "gradcam/fit-epoch=0-step=4/summary.json"]
    assert set(record["failed_figures"]) == {"broken", "also_broken"}
    assert (tmp_path / "xai" / "gradcam" / "fit-epoch=0-step=4" / "maps.npy").exists()


def test_strict_sink_raises_after_writing_the_data(tmp_path):
    sink = ArtifactSink([], str(tmp_path), Event("gradcam", "fit", 0, 4), strict=True)
    sink.figure("broken", lambda: 1 / 0)
    sink.array("maps", np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ZeroDivisionError):
        sink.commit(method="gradcam")
    (record,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
    assert record["failed_figures"] == {"broken": "ZeroDivisionError: division by zero"}
    assert (tmp_path / "xai" / "gradcam" / "fit-epoch=0-step=4" / "maps.npy").exists()


# ------------------------------------------------------------------------------------- 9. errors name the file
def test_write_errors_name_the_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="a_file"):
        atomic_write_bytes(blocker / "x" / "y.npy", b"data")
    sink = ArtifactSink([], str(blocker), Event("gradcam", "fit", 0, 4))
    with pytest.raises(OSError, match="a_file"):
        sink.array("maps", np.zeros(2))


def test_a_full_disk_names_the_file(tmp_path):
    files = ROOT / "lightning_xai" / "sinks" / "files.py"
    code = textwrap.dedent(f"""
        import importlib.util, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        spec = importlib.util.spec_from_file_location("files", {str(files)!r})  # the module alone: no torch import
        files = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(files)
        atomic_write_bytes = files.atomic_write_bytes
        try:
            atomic_write_bytes({str(tmp_path / "big.npy")!r}, b"x" * 100_000)
        except OSError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "File too large" in out.stdout and "big.npy" in out.stdout, out.stdout + out.stderr
    assert not list(tmp_path.glob(".big.npy.*"))  # no temporary file left behind


# ------------------------------------------------------------------------------------- 10. names stay inside xai/
@pytest.mark.parametrize("name", ["..", ".", "n" * 300, "a/b", ".hidden", "", "ünï"])
def test_names_that_leave_the_folder_are_refused(name):
    with pytest.raises(ValueError, match="`name`"):
        GradCAMCallback(name=name)


def test_reasonable_names_are_kept():
    assert GradCAMCallback(name="gradcam_student-v2.1").name == "gradcam_student-v2.1"


# ---------------------------------------------------------------- 12. the user's frame, quiet fast_dev_run loggers
def user_forward_fn_that_breaks(model, inputs):
    raise RuntimeError("the user's forward broke")


def test_on_error_warn_shows_the_users_own_frame(tmp_path):
    tr, va = shapes_loaders()
    cb = GradCAMCallback(num_samples=4, forward_fn=user_forward_fn_that_breaks)
    with pytest.warns(RuntimeWarning, match="the user's forward broke") as caught:
        _trainer(tmp_path, [cb]).fit(_model(0), tr, va)
    text = "\n".join(str(w.message) for w in caught)
    assert "user_forward_fn_that_breaks" in text  # today format_exc(limit=4) stops before it


def test_fast_dev_run_does_not_warn_about_the_dummy_logger(tmp_path):
    tr, va = shapes_loaders()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(accelerator="cpu", fast_dev_run=True, default_root_dir=str(tmp_path), enable_progress_bar=False,
                enable_model_summary=False, callbacks=[GradCAMCallback(num_samples=4, on_error="raise")]
                ).fit(_model(0), tr, va)
    assert not [w for w in caught if "DummyLogger" in str(w.message)]


# -------------------------------------------------------------------------- 13. scalars are Lightning metrics
def test_scalars_reach_callback_and_logged_metrics(tmp_path):
    tr, va = shapes_loaders()
    seen = {}

    class Spy(Callback):
        def on_validation_end(self, trainer, pl_module):
            seen.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("xai/")})

    trainer = _trainer(tmp_path, [GradCAMCallback(num_samples=4, on_error="raise"), Spy()])
    trainer.fit(_model(0), tr, va)
    records = list(read_manifest(tmp_path / "xai" / "manifest.jsonl"))
    logged = {k: v for r in records for k, v in r["scalars"].items()}
    assert seen.pop("xai/gradcam/seconds") > 0  # how long the step took: logged, not in the manifest
    assert logged and seen == pytest.approx(logged)  # in time for on_validation_end, same values as the manifest
    lightning = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("xai/")}
    assert lightning.pop("xai/gradcam/seconds") > 0 and lightning == pytest.approx(logged)
    results = trainer.validate(_model(0), va, verbose=False)
    assert "xai/gradcam/gradcam/nonfinite" in trainer.callback_metrics
    assert json.dumps(results)  # plain numbers
