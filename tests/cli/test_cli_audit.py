"""``lightning-xai audit`` and ``lightning-xai compare``: checkpoints re-validated through LightningCLI."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import seed_everything

from lightning_xai import AttributionDriftCallback, AttributionStore
from lightning_xai.cli import main
from lightning_xai.datasets import SyntheticShapesDataModule
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest
from tests.helpers import ROOT, scalar_values, tiny_trainer

EXAMPLE = ROOT / "examples" / "audit.yaml"  # ShapesCNN + SyntheticShapesDataModule + Grad-CAM + calibration
PRESET = ROOT / "callbacks" / "drift.yaml"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny checkpoints of ShapesCNN (seeds 0 and 1) and a byte copy of the first.

    They hold the state of an AttributionDriftCallback of run ``"train"``: the run names that ``compare`` gives
    each checkpoint must win over it.
    """
    root = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for seed in (0, 1):
        seed_everything(seed)
        dm = SyntheticShapesDataModule(batch_size=16, num_train=32, num_val=16, image_size=32)
        drift = AttributionDriftCallback(num_samples=2, store=str(root / "train.sqlite"), run="train")
        trainer = tiny_trainer(root, [drift], logger=False, default_root_dir=root / f"fit{seed}")
        trainer.fit(ShapesCNN(), datamodule=dm)
        paths[f"seed{seed}"] = root / f"seed{seed}.ckpt"
        trainer.save_checkpoint(paths[f"seed{seed}"])
    paths["copy"] = root / "seed0_copy.ckpt"
    shutil.copyfile(paths["seed0"], paths["copy"])
    return paths


def _run(command: str, tmp_path: Path) -> tuple[int, str]:
    """``main`` on ``command`` (split on spaces) plus flags that shrink examples/audit.yaml to one batch of 16."""
    small = "--data.init_args.num_val 16 --data.init_args.batch_size 16 --trainer.limit_val_batches 1 "
    small += f"--trainer.logger.init_args.save_dir {tmp_path / 'logs'}"
    out = io.StringIO()
    return main([*command.split(), *small.split()], out=out), out.getvalue()


def test_audit_prints_the_xai_scalars_and_where_the_artifacts_went(tmp_path, ckpts):
    status, text = _run(f"audit --config {EXAMPLE} --ckpt_path {ckpts['seed0']}", tmp_path)
    assert status == 0
    log_dir = tmp_path / "logs" / "audit" / "version_0"
    manifest = log_dir / "xai" / "manifest.jsonl"
    assert f"Log dir: {log_dir}" in text and f"Manifest: {manifest} (3 artifact sets" in text
    records = list(read_manifest(manifest))
    assert {(r["callback"], r["method"]) for r in records} == {
        ("gradcam", "gradcam"),
        ("gradcam", "gradcam++"),
        ("calibration", "calibration"),
    }
    assert all(r["ckpt_path"] == str(ckpts["seed0"]) for r in records)
    folder = next((log_dir / "xai" / "gradcam").glob("validate-epoch=*"))
    assert all((folder / f"gradcam_{m}.npy").stat().st_size > 0 for m in ("gradcam", "gradcam++"))
    rows = {
        c[1].strip(): c[2].strip() for c in (line.split("|") for line in text.splitlines()) if len(c) == 4
    }
    expected = {
        "xai/calibration/ece",
        "xai/calibration/temperature",
        "xai/gradcam/gradcam/pointing_game",
        "xai/gradcam/gradcam++/energy_in_mask",
    }
    assert expected <= set(rows)
    # the table shows what TensorBoard got: each manifest line records its scalars under their tags
    (ece,) = {v for _, v in scalar_values(log_dir, "xai/calibration/ece")}  # the checkpoint's step, and Lightning's 0
    assert rows["xai/calibration/ece"] == f"{ece:.4g}"
    assert "val/acc" in text


def test_compare_a_copy_is_identical_and_another_seed_is_not(tmp_path, ckpts):
    store, png, no_callbacks = tmp_path / "s.sqlite", tmp_path / "c.png", tmp_path / "none.yaml"
    no_callbacks.write_text("trainer:\n  callbacks: []\n")  # only the AttributionDriftCallback compare adds
    status, text = _run(
        f"compare --config {EXAMPLE} --config {no_callbacks} --ckpt_path {ckpts['seed0']} {ckpts['copy']} "
        f"{ckpts['seed1']} --method gradcam --store {store} --out {png}",
        tmp_path,
    )
    assert status == 0
    with AttributionStore(store, create=False) as s:
        assert [r.name for r in s.runs()] == ["seed0", "seed0_copy", "seed1"]  # the stems, not "train"
        copy, other = s.load("seed0_copy").info, s.load("seed1").info
        assert copy.method == "gradcam" and copy.checkpoint_path == str(ckpts["copy"])
        assert (
            copy.meta["against"]["reference"]["run"] == "seed0"
            and copy.meta["drift"]["reference"]["spearman"] == 1
        )
        assert (
            s.compare(("seed0", None), ("seed0_copy", None), key="gradcam")["spearman"].tolist() == [1.0] * 8
        )
        assert (
            other.meta["against"]["reference"]["run"] == "seed0"
            and other.meta["drift"]["reference"]["spearman"] < 1
        )
        assert float(s.compare(("seed0", None), ("seed1", None), key="gradcam")["spearman"].mean()) < 1.0
    table = text.split("Attribution drift in")[1]
    assert all(f"| {run} " in table for run in ("seed0", "seed0_copy", "seed1"))
    pair = next(line for line in table.splitlines() if line.startswith("| seed0 ") and "seed0_copy" in line)
    assert pair.rstrip(" |").endswith("1.000")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    maps = tmp_path / "c_maps.png"  # probe x run: each probe's map in every run's last snapshot
    assert f"written to {maps}" in text and maps.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(str(maps)).shape[1] > imread(str(png)).shape[1] // 2  # three map columns, not a thumbnail


def test_a_second_compare_into_one_store_reports_its_own_runs(tmp_path, ckpts):
    store, no_callbacks = tmp_path / "s.sqlite", tmp_path / "none.yaml"
    no_callbacks.write_text("trainer:\n  callbacks: []\n")
    command = (f"compare --config {EXAMPLE} --config {no_callbacks} --ckpt_path {ckpts['seed0']} {ckpts['seed1']} "
               f"--method gradcam --store {store} --out {tmp_path / 'c.png'}")
    assert _run(command, tmp_path / "first")[0] == 0
    status, text = _run(command, tmp_path / "second")
    assert status == 0
    assert "as run 'seed0#2'" in text and "as run 'seed1#2'" in text  # not the first compare's runs
    with AttributionStore(store, create=False) as s:
        assert [r.name for r in s.runs()] == ["seed0", "seed1", "seed0#2", "seed1#2"]
        assert s.load("seed1#2").info.meta["against"]["reference"]["run"] == "seed0#2"
    table = text.split("Attribution drift in")[1]
    assert "| seed0#2 " in table and "| seed1#2 " in table and "| seed0 " not in table


def test_compare_sets_run_reference_and_store_of_the_config_drift_callback(tmp_path, ckpts, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's store is the relative xai_store.sqlite; the PNG goes here too
    with pytest.warns(RuntimeWarning, match="drift alert"):  # the preset alerts below a Spearman of 0.8
        status, text = _run(
            f"compare --config {EXAMPLE} --config {PRESET} --ckpt_path {ckpts['seed0']} {ckpts['seed1']} "
            "--names v1 v2 --metric ndcg",
            tmp_path,
        )
    assert status == 0 and "ndcg" in text and (tmp_path / "compare.png").is_file()
    with AttributionStore(tmp_path / "xai_store.sqlite", create=False) as s:
        assert [r.name for r in s.runs()] == ["v1", "v2"]
        v1, v2 = s.load("v1").info, s.load("v2").info
    assert v2.meta["against"]["reference"]["run"] == "v1" and v2.probe_fingerprint == v1.probe_fingerprint
    records = [r for m in (tmp_path / "logs").rglob("manifest.jsonl") for r in read_manifest(m)]
    assert sorted(r["run"] for r in records if r["callback"] == "drift") == ["v1", "v2"]
    assert "xai/drift/ndcg/reference" in next(r for r in records if r.get("run") == "v2")["scalars"]


@pytest.mark.parametrize(
    ("command", "match"),
    [
        (
            "audit --ckpt_path no-such.ckpt",
            "`--ckpt_path` to be an existing checkpoint file, but got 'no-such.ckpt'",
        ),
        ("compare --ckpt_path {seed0}", "`--ckpt_path` to be two or more checkpoint files"),
        ("compare --ckpt_path {seed0} no-such.ckpt", "`--ckpt_path` to be existing checkpoint files"),
        ("compare --ckpt_path {seed0} {seed1} --names v1", "`--names` to be 2 distinct"),
        (
            "compare --ckpt_path {seed0} {seed0} --config x.yaml",
            "`--ckpt_path` to be checkpoint files with distinct stems",
        ),
        ("compare --ckpt_path {seed0} {seed1} --method lime", "`--method` to be one of"),
    ],
)
def test_wrong_arguments_are_named_in_one_line(command, match, ckpts, capsys):
    argv = command.format(**ckpts).split()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith(f"lightning-xai {argv[0]}: ") and err.count("\n") == 1


def test_the_command_exits_non_zero_and_drift_takes_no_lightning_flags(tmp_path, capsys):
    command = [sys.executable, "-m", "lightning_xai.cli", "audit", "--ckpt_path", str(tmp_path / "x.ckpt")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "`--ckpt_path`" in done.stderr.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        main(["drift", "--store", "s.sqlite", "--config", "a.yaml"])
    assert "unrecognized arguments: --config a.yaml" in capsys.readouterr().err
