"""AttributionStore (lightning_xai.sinks.store): round trips, lookups, refusals, crashes, concurrency."""

from __future__ import annotations

import importlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_xai.sinks import store as store_module
from lightning_xai.sinks.store import AttributionStore, Snapshot
from tests.helpers import ROOT

# A writer process. It imports the store modules alone: the package __init__ pulls in Lightning (15 s on a
# busy 2-core machine) and the store needs none of it. Arrays are a function of (seed, i), for the parent to
# check.
WRITER = r"""
import sys, types, pathlib
root, db, run, n, size, seed, go = sys.argv[1:8]
for name in ("lightning_xai", "lightning_xai.sinks"):
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(pathlib.Path(root, *name.split(".")))]
    sys.modules[name] = pkg
import time
import numpy as np
from lightning_xai.sinks.store import AttributionStore

def arrays(seed, i, size):
    rng = np.random.default_rng(seed * 100_000 + i)
    shape = (8, size, size)
    return {"maps": rng.standard_normal(shape).astype(np.float32),
            "other": rng.standard_normal(shape).astype(np.float32), "index": np.arange(8) + i}

print("ready", flush=True)
if go != "-":
    while not pathlib.Path(go).exists():
        time.sleep(0.01)
with AttributionStore(db) as store:
    for i in range(int(n)):
        print(f"begin {i}", flush=True)
        info = store.write(run, arrays(int(seed), i, int(size)), epoch=i, global_step=10 * i, method="m",
                           probe_fingerprint="fp", meta={"i": i}, dtype="float32")
        print(f"committed {info.id} {i}", flush=True)
"""


def _expected_arrays(seed: int, i: int, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed * 100_000 + i)
    shape = (8, size, size)
    return {
        "maps": rng.standard_normal(shape).astype(np.float32),
        "other": rng.standard_normal(shape).astype(np.float32),
        "index": np.arange(8) + i,
    }


def _start_writer(tmp_path: Path, db: Path, run: str, n: int, size: int, seed: int, go: Path | None):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(ROOT), str(db), run, str(n), str(size), str(seed), str(go or "-")]
    pipe = subprocess.PIPE
    command = [sys.executable, str(script), *args]
    return subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=env)


def _write(store: AttributionStore, run: str, step: int, arrays: dict, **kwargs):
    options = {"epoch": step // 10, "method": "gradcam", "probe_fingerprint": "fp", **kwargs}
    return store.write(run, arrays, global_step=step, **options)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "attributions.sqlite"


# --- round trips -----------------------------------------------------------------------------------------


def test_float16_round_trip_keeps_shape_dtype_and_precision(path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    tiny = torch.randn(4, 3, 5, 6, generator=gen) * 1e-7  # raw gradients: below float16's normal range
    large = torch.randn(4, 7, generator=gen) * 1e6  # beyond float16's largest value (65504)
    special = torch.tensor([[0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1.0]])
    labels, mask = torch.arange(4), torch.tensor([True, False, True])
    halves = torch.randn(3, 4, generator=gen).half()  # already float16: stored exactly
    big_endian = np.arange(6, dtype=">f4").reshape(2, 3)
    with AttributionStore(path) as store:
        arrays = {"tiny": tiny, "large": large, "special": special, "labels": labels, "mask": mask,
                  "halves": halves, "big_endian": big_endian}
        _write(store, "r", 0, arrays)
        _write(store, "r", 10, {"tiny": tiny.numpy(), "large": large.numpy()}, dtype="float32")
        half, full = store.load("r", 0), store.load("r", 10)
    assert half.dtypes == {"tiny": "<f2", "large": "<f2", "special": "<f2", "labels": "<i8", "mask": "|b1",
                           "halves": "<f2", "big_endian": "<f2"}
    assert full.dtypes == {"tiny": "<f4", "large": "<f4"}
    for name, original in (("tiny", tiny), ("large", large)):
        assert half.arrays[name].dtype == torch.float32 and half.arrays[name].shape == original.shape
        torch.testing.assert_close(half.arrays[name], original, rtol=2**-11, atol=0)  # float16's precision
        assert torch.equal(full.arrays[name], original)  # float32: exact
    torch.testing.assert_close(half.arrays["special"], special, equal_nan=True, rtol=0, atol=0)
    assert torch.equal(half.arrays["labels"], labels) and torch.equal(half.arrays["mask"], mask)
    assert torch.equal(half.arrays["halves"], halves.float())
    assert torch.equal(half.arrays["big_endian"], torch.arange(6.0).reshape(2, 3))


def test_float16_snapshot_is_half_the_size(path: Path) -> None:
    maps = torch.rand(16, 64, 64)
    with AttributionStore(path) as store:
        _write(store, "r", 0, {"m": maps})
        _write(store, "r", 10, {"m": maps}, dtype="float32")
        sizes = store._db().execute("SELECT length(data) FROM arrays ORDER BY snapshot_id").fetchall()
    assert [s for (s,) in sizes] == [maps.numel() * 2, maps.numel() * 4]


def test_no_pickle_anywhere() -> None:
    package = Path(store_module.__file__).parent
    names = ["", *sorted(f".{p.stem}" for p in package.glob("_*.py") if p.stem != "__init__")]
    assert {"._schema", "._records", "._read", "._write"} <= set(names)
    for name in names:
        module = importlib.import_module(f"lightning_xai.sinks.store{name}")
        assert "pickle" not in vars(module)
        source = Path(module.__file__).read_text()
        for forbidden in ("import pickle", "allow_pickle=True", "torch.load", "np.load", "loads(data"):
            assert forbidden not in source, (module.__name__, forbidden)


# --- runs, snapshots, lookups ----------------------------------------------------------------------------


def test_runs_snapshots_and_load(path: Path) -> None:
    maps = {step: torch.rand(2, 4, 4) for step in (0, 10, 20)}
    with AttributionStore(path) as store:
        assert store.runs() == []
        for step in (20, 0, 10):  # written out of order
            info = _write(store, "a", step, {"m": maps[step]}, meta={"note": step}, run_meta={"lr": 0.1},
                          checkpoint_path=path.parent / f"step={step}.ckpt", model_hash=f"h{step}")
        _write(store, "b", 5, {"m": maps[0]})
        assert info.id == 3 and info.meta == {"note": 10} and info.checkpoint_path.endswith("step=10.ckpt")
        runs = {r.name: r for r in store.runs()}
        assert list(runs) == ["a", "b"]
        a = runs["a"]
        assert (a.num_snapshots, a.first_epoch, a.last_epoch, a.last_step) == (3, 0, 2, 20)
        assert runs["a"].meta == {"lr": 0.1} and runs["b"].num_snapshots == 1
        assert [s.global_step for s in store.snapshots("a")] == [0, 10, 20]
        last = store.load("a")
        assert isinstance(last, Snapshot) and last.info.global_step == 20 and last.info.model_hash == "h20"
        assert torch.allclose(last.arrays["m"], maps[20], rtol=1e-3)
        assert store.load("a", 10).info.meta == {"note": 10}
        assert store.load("a", epoch=0).info.global_step == 0
        with pytest.raises(ValueError, match=r"`run` to be the name of a run in .*\['a', 'b'\], but got 'c'"):
            store.load("c")
        with pytest.raises(ValueError, match=r"`step` to be one of the steps of run 'a': \[0, 10, 20\], but"):
            store.load("a", 15)
        with pytest.raises(ValueError, match=r"`epoch` to be one of the epochs of run 'a': \[0, 1, 2\], but"):
            store.load("a", epoch=7)


def test_methods_and_reference_snapshot(path: Path) -> None:
    with AttributionStore(path) as store:
        _write(store, "ref", 10, {"m": torch.rand(2, 3)}, method="gradcam")
        _write(store, "ref", 10, {"m": torch.rand(2, 3)}, method="shap")
        _write(store, "ref", 25, {"m": torch.rand(2, 3)}, method="gradcam")
        with pytest.raises(ValueError, match=r"several methods at global step 10 \(\['gradcam', 'shap'\]\)"):
            store.load("ref", 10)
        assert store.load("ref", 10, method="shap").info.method == "shap"
        assert [s.global_step for s in store.snapshots("ref", method="gradcam")] == [10, 25]
        assert store.reference_snapshot("ref", epoch=2).info.global_step == 25  # same epoch
        assert store.reference_snapshot("ref", epoch=1, method="shap").info.global_step == 10
        assert store.reference_snapshot("ref", epoch=9).info.global_step == 25  # no epoch 9: the last
        with pytest.raises(ValueError, match="has no snapshots of method 'lrp'"):
            store.load("ref", method="lrp")


def test_compare(path: Path) -> None:
    maps, tokens = torch.rand(3, 8, 8), torch.rand(3, 12)
    with AttributionStore(path) as store:
        _write(store, "a", 10, {"gradcam": maps, "tokens": tokens, "index": torch.arange(3)})
        _write(store, "b", 10, {"gradcam": maps, "tokens": tokens, "index": torch.arange(3)})
        _write(store, "b", 20, {"gradcam": torch.rand(3, 8, 8), "tokens": tokens, "index": torch.arange(3)})
        _write(store, "other-probes", 10, {"gradcam": maps}, probe_fingerprint="another")
        same = store.compare(("a", 10), ("b", 10), key="gradcam")
        for name in ("spearman", "ndcg", "topk_iou", "cosine"):
            assert torch.equal(same[name], torch.ones(3)), name
        for name in ("com_shift", "focus_radius_change"):
            assert torch.equal(same[name], torch.zeros(3)), name
        every = store.compare(store.load("a"), ("b", None))
        assert "index/spearman" not in every and every["tokens/top_token_overlap"].tolist() == [1.0, 1.0, 1.0]
        assert (every["gradcam/spearman"] < 0.9).all()
        assert set(store.compare(("a", 10), ("b", 20), key="gradcam", kind="vector")) == {
            "spearman", "ndcg", "topk_iou", "cosine"}
        with pytest.raises(ValueError, match=r"different probe sets: 'a' step 10 has probe fingerprint 'fp', "
                                             r"'other-probes' step 10 has 'another'"):
            store.compare(("a", 10), ("other-probes", 10))
        with pytest.raises(ValueError, match=r"`key` to be an array of snapshot `a`: \['gradcam', 'index'"):
            store.compare(("a", 10), ("b", 10), key="shap")
        with pytest.raises(TypeError, match="a Snapshot or a"):
            store.compare("a", ("b", 10))


def test_write_is_all_or_nothing(path: Path) -> None:
    with AttributionStore(path) as store:
        store._db().execute("CREATE TEMP TRIGGER fail BEFORE INSERT ON arrays WHEN NEW.name = 'second'"
                            " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
        with pytest.raises(sqlite3.IntegrityError, match="disk trouble"):
            _write(store, "new-run", 0, {"first": torch.rand(2, 2), "second": torch.rand(2, 2)})
        assert store.runs() == []  # not even the run: the whole transaction was rolled back
        assert store._db().execute("SELECT COUNT(*) FROM arrays").fetchone() == (0,)
        with pytest.raises(TypeError, match=r"`arrays\['bad'\]` to be a floating array, or one of int8"):
            _write(store, "new-run", 0, {"ok": torch.rand(2), "bad": np.array(["text"])})
        assert store.runs() == []


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dtype": "float64"}, r"`dtype` to be one of \['float16', 'float32'\]"),
        ({"epoch": -1}, r"`epoch` to be an integer of at least 0"),
        ({"global_step": 1.5}, r"`global_step` to be an integer of at least 0"),
        ({"method": ""}, r"`method` to be a non-empty string"),
        ({"probe_fingerprint": None}, r"`probe_fingerprint` to be a non-empty string"),
        ({"arrays": {}}, r"`arrays` to be a non-empty dict"),
        ({"run": 3}, r"`run` to be a non-empty string"),
        ({"run": "  "}, r"`run` to be a non-empty string \(not only white space\)"),
    ],
)
def test_write_arguments_are_checked(path: Path, kwargs: dict, pattern: str) -> None:
    options = {"run": "r", "arrays": {"m": torch.rand(2)}, "epoch": 0, "global_step": 0, "method": "m",
               "probe_fingerprint": "fp", **kwargs}
    with AttributionStore(path) as store, pytest.raises(ValueError, match=pattern):
        store.write(options.pop("run"), options.pop("arrays"), **options)


def test_new_run_names_and_refuses_by_if_exists(path: Path) -> None:
    with AttributionStore(path) as store:
        assert [store.new_run("a", meta={"k": 1}), store.new_run("a"), store.new_run("a")] == ["a", "a#2", "a#3"]
        assert store.new_run("a", if_exists="append") == "a" and store.new_run("b", if_exists="raise") == "b"
        with pytest.raises(ValueError, match=r"`run` to be the name of a run not yet in .*s\.sqlite"):
            store.new_run("a", if_exists="raise")
        with pytest.raises(ValueError, match="`if_exists`"):
            store.new_run("a", if_exists="overwrite")  # type: ignore[arg-type]
        runs = store.runs()
        assert [r.name for r in runs] == ["a", "a#2", "a#3", "b"] and runs[0].meta == {"k": 1}
        assert all(r.num_snapshots == 0 for r in runs)  # named, still empty
        _write(store, "a#2", 10, {"m": torch.ones(2)})  # a named run takes snapshots like any other
        assert [s.global_step for s in store.snapshots("a#2")] == [10]


def test_snapshots_of_one_probe(path: Path) -> None:
    with AttributionStore(path) as store:
        for fingerprint, size in (("small", 2), ("large", 3)):
            _write(store, "r", 10, {"m": torch.ones(size)}, probe_fingerprint=fingerprint)
        assert [s.probe_fingerprint for s in store.snapshots("r", probe_fingerprint="small")] == ["small"]
        assert store.load("r", 10, probe_fingerprint="small").arrays["m"].shape == (2,)
        assert store.load("r", 10).arrays["m"].shape == (3,)  # the last written at that step
        first = store.snapshots("r")[0]
        assert store.load_snapshot(first).info == first
        assert store.reference_snapshot("r", 1, probe_fingerprint="small").info.probe_fingerprint == "small"


# --- opening: what is refused, and never written ---------------------------------------------------------


def test_text_file_is_refused_and_unchanged(path: Path) -> None:
    path.write_text("epoch,loss\n0,0.5\n")
    before = path.read_bytes()
    refused = r"is not an AttributionStore: it is not an SQLite database \(it starts with b'epoch,loss"
    with pytest.raises(ValueError, match=refused + r".*will not overwrite it"):
        AttributionStore(path)
    assert path.read_bytes() == before


def test_foreign_sqlite_database_is_refused_and_unchanged(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE experiments (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE meta (name TEXT)")  # a `meta` of its own
    conn.execute("INSERT INTO experiments (name) VALUES ('mine')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    refused = r"without the 'lightning_xai.AttributionStore' marker \(its tables: \['experiments', 'meta'\]\)"
    with pytest.raises(ValueError, match=refused + r".*will not overwrite"):
        AttributionStore(path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.parametrize(
    ("meta_version", "refused"),
    [
        ("99", r"schema version 99, newer than this lightning_xai supports \(version 1\): upgrade lightning"),
        ("1", r"damaged AttributionStore: its schema versions disagree \(user_version 99, meta '1'\)"),
    ],
)
def test_newer_schema_is_refused_and_unchanged(path: Path, meta_version: str, refused: str) -> None:
    AttributionStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (meta_version,))
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ValueError, match=refused):
        AttributionStore(path)
    assert path.read_bytes() == before


def test_create_flag_and_empty_file(path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="create=False"):
        AttributionStore(path, create=False)
    assert not path.exists()
    path.touch()  # an empty file holds nothing to lose: it becomes a store
    with pytest.raises(ValueError, match="empty file"):
        AttributionStore(path, create=False)
    with AttributionStore(path) as store:
        _write(store, "r", 0, {"m": torch.rand(2)})
    with AttributionStore(path, create=False) as store:
        assert [r.name for r in store.runs()] == ["r"]
        assert store._db().execute("PRAGMA journal_mode").fetchone() == ("wal",)
    nested = path.parent / "a" / "b" / "store.sqlite"
    AttributionStore(nested).close()
    assert nested.exists()
    store = AttributionStore(nested)
    store.close()
    store.close()  # idempotent
    with pytest.raises(ValueError, match="is closed"):
        store.runs()


# --- crashes and concurrency -----------------------------------------------------------------------------


def _check_intact(db: Path, run: str, seed: int, size: int, committed: dict[int, int]) -> list:
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    with AttributionStore(db, create=False) as store:
        infos = store.snapshots(run)
        assert {i.id for i in infos} >= set(committed)
        for info in infos:  # every snapshot there is whole, reported or not
            snap = store.load(run, info.global_step)
            expected = _expected_arrays(seed, info.meta["i"], size)
            assert sorted(snap.arrays) == sorted(expected)
            for name, array in expected.items():
                assert np.array_equal(snap.arrays[name].numpy(), array), (info, name)
        for snapshot_id, i in committed.items():
            assert any(info.id == snapshot_id and info.meta["i"] == i for info in infos)
        _write(store, run, 10_000, {"after": torch.rand(2)})  # and the store takes new writes
    return infos


def test_killed_writer_leaves_committed_snapshots_intact(tmp_path: Path, path: Path) -> None:
    size = 192  # 8 x 192 x 192 float32: 1.2 MB per array, so a write takes a while
    child = _start_writer(tmp_path, path, "crash", 10_000, size, 1, None)
    lines = []
    try:
        for line in child.stdout:
            lines.append(line.split())
            if lines[-1] == ["begin", "3"]:  # three committed, the fourth being written
                time.sleep(random.uniform(0.0, 0.03))
                break
        else:
            pytest.fail(f"writer ended early: {child.stderr.read()}")
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    lines += [line.split() for line in rest.splitlines()]
    committed = {int(words[1]): int(words[2]) for words in lines if words and words[0] == "committed"}
    assert len(committed) >= 3
    infos = _check_intact(path, "crash", 1, size, committed)
    assert len(infos) in (len(committed), len(committed) + 1)  # at most one committed but not yet reported


def test_two_processes_write_the_same_store_at_once(tmp_path: Path, path: Path) -> None:
    """This process and a child create the store and write their runs at the same time; nothing is lost."""
    go, n, size = tmp_path / "go", 12, 96
    child = _start_writer(tmp_path, path, "child", n, size, 2, go)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    go.touch()  # the child polls for it every 10 ms: both open (one creates) the store and write at once
    with AttributionStore(path) as store:
        for i in range(n):
            store.write("parent", _expected_arrays(3, i, size), epoch=i, global_step=10 * i, method="m",
                        probe_fingerprint="fp", meta={"i": i}, dtype="float32")
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.count("committed") == n
    for run, seed in (("child", 2), ("parent", 3)):
        infos = _check_intact(path, run, seed, size, {})
        assert [i.meta["i"] for i in infos] == list(range(n))
