"""``lightning-xai``: every user error is one line on stderr naming the file, exit status 2; ``--debug`` adds
the traceback; a bug still propagates."""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttributionStore
from lightning_xai.cli import _drift as drift_module
from lightning_xai.cli import main
from lightning_xai.datasets import SyntheticShapesDataModule
from lightning_xai.demo import ShapesCNN
from tests.helpers import ROOT, tiny_trainer

EXAMPLE = ROOT / "examples" / "audit.yaml"  # ShapesCNN (width 16) + callbacks
SMALL = "--data.init_args.num_val 16 --data.init_args.batch_size 16 --trainer.limit_val_batches 1".split()


class OtherModel(LightningModule):
    """A LightningModule of another class than the config's ShapesCNN."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints (of OtherModel, of ShapesCNN width 4, a plain state_dict, text) and stores that are not."""
    root = tmp_path_factory.mktemp("cli_errors")
    seed_everything(0)
    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), batch_size=4)
    trainer = tiny_trainer(root, [], logger=False, max_steps=1, default_root_dir=root / "fit_other")
    trainer.fit(OtherModel(), data)
    trainer.save_checkpoint(root / "other.ckpt")
    dm = SyntheticShapesDataModule(batch_size=8, num_train=8, num_val=8, image_size=32)
    trainer = tiny_trainer(root, [], logger=False, max_steps=1, default_root_dir=root / "fit_w4")
    trainer.fit(ShapesCNN(width=4), datamodule=dm)
    trainer.save_checkpoint(root / "w4.ckpt")
    torch.save(OtherModel().state_dict(), root / "plain.pt")
    (root / "text.ckpt").write_text("not a checkpoint\n")
    (root / "directory").mkdir()
    (root / "text.sqlite").write_text("run,epoch\nv1,0\n")
    with closing(sqlite3.connect(root / "foreign.sqlite")) as conn, conn:  # another application's database
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with AttributionStore(root / "newer.sqlite"):
        pass
    with closing(sqlite3.connect(root / "newer.sqlite")) as conn, conn:  # as a later lightning_xai writes it
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.execute("PRAGMA user_version = 99")
    with AttributionStore(root / "store.sqlite") as store:  # a good store: two runs of two methods
        store.write("a", {"gradcam": torch.rand(2, 4, 4)}, epoch=0, global_step=1, method="gradcam",
                    probe_fingerprint="f")
        store.write("b", {"shap": torch.rand(2, 4, 4)}, epoch=0, global_step=1, method="shap",
                    probe_fingerprint="f")
    return {p.stem if p.suffix == ".sqlite" else p.name: p for p in root.iterdir()}


def _one_line(capsys: pytest.CaptureFixture[str], command: str, *named: Path | str) -> str:
    """stderr: one line ``lightning-xai <command>: error: ...`` naming ``named``, without a traceback."""
    err = capsys.readouterr().err
    assert err.startswith(f"lightning-xai {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "<unicode string>" not in err
    assert all(str(name) in err for name in named), err
    return err


@pytest.mark.parametrize(
    ("store", "match"),
    [
        ("missing.sqlite", "no store at"),
        ("directory", "it is a directory"),
        ("text", "not an SQLite database"),
        ("foreign", "without the 'lightning_xai.AttributionStore' marker"),
        ("newer", "schema version 99, newer than"),
    ],
)
def test_drift_refuses_what_is_not_a_store_in_one_line(store, match, files, tmp_path, capsys):
    path = files.get(store, tmp_path / store)
    assert main(["drift", "--store", str(path), "--out", str(tmp_path / "d.png")]) == 2
    assert match in _one_line(capsys, "drift", path)
    assert not (tmp_path / "d.png").exists()


def test_drift_names_an_out_it_cannot_write_and_a_reference_without_snapshots(files, tmp_path, capsys):
    assert main(["drift", "--store", str(files["store"]), "--out", str(tmp_path)]) == 2  # a directory
    assert "cannot write `--out`" in _one_line(capsys, "drift", tmp_path)
    # run "a" has gradcam snapshots, its reference "b" none of that method
    argv = ["drift", "--store", str(files["store"]), "--reference", "b", "--out", str(tmp_path / "d.png")]
    assert main(argv) == 2
    err = _one_line(capsys, "drift", "`--reference` b", files["store"])
    assert "has no snapshots to compare against" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_traceback_with_its_cause_then_the_line(where, files, capsys):
    argv = ["drift", "--store", str(files["text"])]
    assert main(["--debug", *argv] if where == "before" else [*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ValueError: " in err and "direct cause" in err  # the store's error
    assert err.splitlines()[-1].startswith("lightning-xai drift: error: ") and str(files["text"]) in err
    with pytest.raises(SystemExit) as usage:  # argparse's own usage errors still exit 2
        main(["--debug", "drift"])
    assert usage.value.code == 2


def test_a_bug_is_not_reported_as_a_user_error(files, tmp_path, monkeypatch):
    def broken(*args: object) -> str:
        raise KeyError("a bug")

    monkeypatch.setattr(drift_module, "table", broken)
    for debug in ([], ["--debug"]):
        with pytest.raises(KeyError, match="a bug"):
            main([*debug, "drift", "--store", str(files["store"]), "--out", str(tmp_path / "d.png")])


@pytest.mark.parametrize(
    ("ckpt", "match"),
    [
        ("text.ckpt", "cannot be read by torch.load (UnpicklingError"),
        ("plain.pt", "is not a Lightning checkpoint: it holds a dict of 2 keys ['layer.weight', 'layer.bias']"),
        ("directory", "`--ckpt_path` to be an existing checkpoint file"),
    ],
)
def test_audit_names_a_checkpoint_it_cannot_read(ckpt, match, files, capsys):
    assert main(["audit", "--config", str(EXAMPLE), "--ckpt_path", str(files[ckpt])]) == 2
    assert match in _one_line(capsys, "audit", files[ckpt])


def test_audit_of_a_checkpoint_of_another_class_names_it_and_the_model(files, tmp_path, capsys):
    logs = ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    argv = ["audit", "--config", str(EXAMPLE), "--ckpt_path", str(files["other.ckpt"]), *SMALL, *logs]
    assert main(argv) == 2
    err = _one_line(capsys, "audit", files["other.ckpt"], "does not fit model lightning_xai.demo.ShapesCNN")
    assert "missing keys features.0.weight, features.0.bias, features.1.weight (+17 more)" in err
    assert "unexpected keys layer.weight, layer.bias" in err
    # another width of the same class: the shapes that differ; --debug shows torch's own error as the cause
    argv = ["--debug", "audit", "--config", str(EXAMPLE), "--ckpt_path", str(files["w4.ckpt"]), *SMALL, *logs]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "RuntimeError: Error(s) in loading state_dict for ShapesCNN" in err and "direct cause" in err
    assert f"checkpoint {files['w4.ckpt']} does not fit" in err.splitlines()[-1]
    shapes = "other shapes for features.0.weight ([4, 3, 3, 3] in the checkpoint, [16, 3, 3, 3] in the model)"
    assert shapes in err


def test_compare_names_the_checkpoint_that_does_not_fit(files, tmp_path, capsys):
    no_callbacks = tmp_path / "none.yaml"
    no_callbacks.write_text("trainer:\n  callbacks: []\n")
    argv = ["compare", "--config", str(EXAMPLE), "--config", str(no_callbacks), "--model.init_args.width", "4",
            "--ckpt_path", str(files["w4.ckpt"]), str(files["other.ckpt"]),
            "--store", str(tmp_path / "s.sqlite"),
            "--out", str(tmp_path / "c.png"), *SMALL, "--trainer.logger.init_args.save_dir", str(tmp_path)]
    out = io.StringIO()
    assert main(argv, out=out) == 2
    assert f"Validated {files['w4.ckpt']}" in out.getvalue()  # the first fits; the second is named
    err = _one_line(capsys, "compare", files["other.ckpt"], "does not fit model lightning_xai.demo.ShapesCNN")
    assert str(files["w4.ckpt"]) not in err


@pytest.mark.parametrize(("store", "ckpt"), [("foreign", "w4.ckpt"), ("store", "text.ckpt")])
def test_compare_refuses_a_store_or_checkpoint_before_validating(store, ckpt, files, tmp_path, capsys):
    argv = ["compare", "--config", str(EXAMPLE), "--ckpt_path", str(files["w4.ckpt"]), str(files[ckpt]),
            "--names", "one", "two", "--store", str(files[store]), "--out", str(tmp_path / "c.png")]
    out = io.StringIO()
    assert main(argv, out=out) == 2 and "Validated" not in out.getvalue()
    _one_line(capsys, "compare", files[store] if store == "foreign" else files[ckpt])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model:\n  class_path: x\n  init_args: [a, b\n", "line 4, column 1 (`--config`) is not valid YAML"),
        ("model:\n\tclass_path: x\n", "line 2, column 1 (`--config`) is not valid YAML"),
        ("just some text\n", "holds a str, not a mapping"),
        (None, "`--config` to be an existing YAML file"),
    ],
)
@pytest.mark.parametrize("command", ["audit", "compare"])
def test_a_config_that_does_not_parse_is_named_with_its_line(command, text, match, files, tmp_path, capsys):
    config = tmp_path / "bad config.yaml"
    if text is not None:
        config.write_text(text)
    ckpts = [str(files["w4.ckpt"])] * (1 if command == "audit" else 2)
    names = [] if command == "audit" else ["--names", "a", "b"]
    assert main([command, "--config", str(EXAMPLE), f"--config={config}", "--ckpt_path", *ckpts, *names]) == 2
    assert match in _one_line(capsys, command, config)


def test_a_yaml_file_given_to_another_lightning_flag_is_checked_too(files, tmp_path, capsys):
    callbacks = tmp_path / "callbacks.yml"
    callbacks.write_text("- class_path: lightning_xai.GradCAMCallback\n  init_args: {num_samples: 2\n")
    argv = ["audit", "--config", str(EXAMPLE), "--trainer.callbacks", str(callbacks),
            "--ckpt_path", str(files["w4.ckpt"])]
    assert main(argv) == 2
    assert "is not valid YAML" in _one_line(capsys, "audit", callbacks, "`--trainer.callbacks`")
