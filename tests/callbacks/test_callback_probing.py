"""ProbingCallback end to end: logged numbers equal cross_val_score, decodable layers far above chance, an untrained
network on label-independent inputs and the control task at chance, checkpoints, observer guarantees, bad input."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_xai import ProbingCallback
from lightning_xai.sinks import read_manifest
from tests.helpers import TINY_HF, Tokens, read_events, scalar_values, seeded, tiny_trainer

LAYERS = ("carrier", "body", "head")
METRICS = ("accuracy", "accuracy_std", "control_accuracy", "selectivity")


class _Net(LightningModule):
    """x (8 features) -> carrier -> body -> dropout -> head (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.carrier = nn.Linear(8, 16)
        self.body = nn.Sequential(nn.ReLU(), nn.Linear(16, 16))
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.drop(self.body(self.carrier(x))))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data(n: int = 240, signal: float = 3.0, seed: int = 0) -> TensorDataset:
    """3 balanced classes; the label added to one input feature each (``signal=0``: inputs independent of it)."""
    y = torch.arange(n) % 3
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed)) + signal * F.one_hot(y, 8).float()
    return TensorDataset(x, y)


def _net(seed: int = 0) -> _Net:
    with seeded(seed):
        return _Net()


def _json(root) -> dict:
    return json.loads(next(root.rglob("probing.json")).read_text())


def test_logged_probes_equal_cross_val_score_and_sit_where_the_label_is(tmp_path):
    data, model = _data(), _net()
    cb = ProbingCallback(layers=LAYERS, cv=5, max_samples=240, on_error="raise")
    tiny_trainer(tmp_path / "signal", [cb], limit_val_batches=None).validate(model, DataLoader(data, batch_size=64))
    summary = _json(tmp_path / "signal")
    assert summary["layers"] == list(LAYERS) and summary["n_samples"] == 240 and summary["pooling"] == "mean"
    probes = summary["targets"]["label"]["layers"]
    acts = []
    handle = model.carrier.register_forward_hook(lambda m, a, out: acts.append(out.detach()))
    with torch.no_grad():
        model.eval()(data.tensors[0][summary["indices"]])
    handle.remove()
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    ref = cross_val_score(pipe, acts[0].double().numpy(), data.tensors[1][summary["indices"]].numpy(), cv=folds)
    assert probes["carrier"]["accuracy"] == pytest.approx(ref.mean(), abs=1e-6)
    assert probes["carrier"]["accuracy_std"] == pytest.approx(ref.std(), abs=1e-6)
    assert probes["carrier"]["accuracy"] > 0.9  # it carries the label linearly (the untrained head, 3 wide, less)
    for layer in LAYERS:
        p = probes[layer]
        assert p["accuracy"] > 0.6 and abs(p["control_accuracy"] - 1 / 3) < 0.1, (layer, p)
        assert p["selectivity"] == p["accuracy"] - p["control_accuracy"] and p["chance"] == pytest.approx(1 / 3)
        for metric in METRICS:
            ((_, value),) = scalar_values(tmp_path / "signal", f"xai/probing/{layer}/{metric}")
            assert value == pytest.approx(p[metric], abs=1e-6)
    assert "xai/probing/accuracy_by_depth" in read_events(tmp_path / "signal")["images"]
    rec = next(r for m in (tmp_path / "signal").rglob("manifest.jsonl") for r in read_manifest(m))
    assert rec["method"] == "probing" and any(f.endswith("probing.json") for f in rec["files"])
    # an untrained network on inputs that say nothing of the label: every layer and the control task at chance
    blind = ProbingCallback(layers=LAYERS, cv=5, max_samples=240, on_error="raise")
    tiny_trainer(tmp_path / "blind", [blind], limit_val_batches=None).validate(
        _net(1), DataLoader(_data(signal=0.0, seed=3), batch_size=64))
    for layer, p in _json(tmp_path / "blind")["targets"]["label"]["layers"].items():
        assert abs(p["accuracy"] - 1 / 3) < 0.1 and abs(p["control_accuracy"] - 1 / 3) < 0.1, (layer, p)


class _Spy(Callback):
    """Snapshots what an observer must leave alone, at the validation epoch's end (before or after the probes)."""

    def __init__(self, shots: list, mix: bool = False) -> None:
        self.shots, self.mix = shots, mix

    def on_validation_epoch_end(self, trainer, pl_module):
        if self.mix:  # a mixed train/eval state, which must survive
            pl_module.body.train()
        self.shots.append({"training": [m.training for m in pl_module.modules()],
                           "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in pl_module.modules()],
                           "grad": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
                           "rng": (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())})


def _fit(tmp_path, callbacks, epochs=2) -> tuple[dict, object]:
    seed_everything(7)
    model = _Net()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, [*callbacks, ckpt], max_epochs=epochs, limit_train_batches=3,
                           limit_val_batches=None, enable_checkpointing=True)
    trainer.fit(model, DataLoader(_data(96, seed=5), batch_size=16, shuffle=True), DataLoader(_data(60), batch_size=30))
    return {k: v.clone() for k, v in model.state_dict().items()}, trainer


def test_observer_fit_every_epoch_state_and_checkpoint_audit(tmp_path):
    without, _ = _fit(tmp_path / "a", [])
    before, after = [], []
    cb = ProbingCallback(layers=LAYERS, cv=3, max_samples=60, on_error="raise")
    with_cb, _ = _fit(tmp_path / "b", [_Spy(before, mix=True), cb, _Spy(after)])
    for k in without:  # dropout, shuffling, SGD: any RNG use or weight change would show
        assert torch.equal(without[k], with_cb[k]), k
    assert len(before) == len(after) == 2
    for a, b in zip(before, after):
        assert a["training"] == b["training"] and a["hooks"] == b["hooks"]
        assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a["grad"], b["grad"]))
        assert torch.equal(a["rng"][0], b["rng"][0]) and np.array_equal(a["rng"][1], b["rng"][1])
        assert a["rng"][2] == b["rng"][2]
    steps = sorted(s for s, _ in scalar_values(tmp_path / "b", "xai/probing/carrier/accuracy"))
    assert steps == [3, 6]  # every epoch, at its global step
    assert read_events(tmp_path / "b")["images"]["xai/probing/accuracy_over_epochs"] == [3, 6]
    state = cb.state_dict()
    assert len(state["probe"]["indices"]) == 60 and [e for e, _ in state["history"]["label"]["head"]] == [0, 1]
    # a checkpoint audit: a fresh callback logs at the checkpoint's step, and takes the probe set from its state
    audit = ProbingCallback(layers=LAYERS, cv=3, max_samples=60, on_error="raise")
    tiny_trainer(tmp_path / "audit", [audit], limit_val_batches=None).validate(
        _Net(), DataLoader(_data(60), batch_size=30), ckpt_path=str(tmp_path / "b" / "ckpt" / "last.ckpt"))
    assert 6 in {s for s, _ in scalar_values(tmp_path / "audit", "xai/probing/head/selectivity")}
    assert audit.state_dict()["probe"]["indices"] == state["probe"]["indices"]
    assert next((tmp_path / "audit").rglob("probing.json")).parent.name == "validate-epoch=1-step=6"


class _Concepts(Dataset):
    """Dict samples: ``x``, ``labels`` and two concept columns, ``colour`` (in the inputs) and ``size`` (not)."""

    def __init__(self, n: int = 90) -> None:
        self.base = _data(n, signal=0.0)
        self.colour = torch.arange(n) % 2
        self.size = (torch.arange(n) // 2) % 3
        self.base.tensors[0][:, 5] += 5.0 * self.colour

    def __len__(self) -> int:
        return len(self.colour)

    def __getitem__(self, i):
        x, y = self.base[i]
        return {"x": x, "labels": y, "colour": self.colour[i], "size": self.size[i]}


def test_concept_columns_are_probed_under_their_own_tags(tmp_path):
    cb = ProbingCallback(layers=("carrier",), concepts=("colour", "size"), cv=3, on_error="raise")
    tiny_trainer(tmp_path, [cb], limit_val_batches=None).validate(_net(), DataLoader(_Concepts(), batch_size=32))
    targets = _json(tmp_path)["targets"]
    assert set(targets) == {"colour", "size"}
    assert targets["colour"]["layers"]["carrier"]["accuracy"] > 0.9
    assert abs(targets["size"]["layers"]["carrier"]["accuracy"] - 1 / 3) < 0.15
    ev = read_events(tmp_path)
    assert {f"xai/probing/colour/carrier/{m}" for m in METRICS} <= set(ev["scalars"])
    assert {"xai/probing/colour/accuracy_by_depth", "xai/probing/size/accuracy_by_depth"} <= set(ev["images"])


def test_time_budget_warns_and_skips_layers(tmp_path):
    cb = ProbingCallback(layers=LAYERS, cv=3, time_budget=1e-9, on_error="raise")
    with pytest.warns(RuntimeWarning, match=r"time_budget=1e-09s.*\['body', 'carrier', 'head'\]"):
        tiny_trainer(tmp_path, [cb], limit_val_batches=None).validate(_net(), DataLoader(_data(30), batch_size=30))
    assert _json(tmp_path)["targets"]["label"]["skipped"] == list(LAYERS)


class _Text(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        with seeded(0):
            self.bert = BertForSequenceClassification(BertConfig(vocab_size=50, **TINY_HF)).bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]

    def validation_step(self, batch, batch_idx):
        return None


def test_bert_blocks_by_auto_with_cls_pooling(tmp_path):
    cb = ProbingCallback(layers="auto", pooling="cls", cv=3, on_error="raise")
    tiny_trainer(tmp_path, [cb], limit_val_batches=None).validate(_Text(), DataLoader(Tokens(48), batch_size=16))
    assert cb.probed_layers == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    probes = _json(tmp_path)["targets"]["label"]["layers"]
    assert list(probes) == cb.probed_layers and all(p["n_features"] == TINY_HF["hidden_size"] for p in probes.values())
    assert {f"xai/probing/{layer}/{m}" for layer in probes for m in METRICS} <= set(read_events(tmp_path)["scalars"])


# ------------------------------------------------------------------------------------------------- bad input
class _DictOut(nn.Module):
    def forward(self, x):
        return {"hidden": x}


class _WithDict(_Net):
    def __init__(self) -> None:
        super().__init__()
        self.wrap = _DictOut()

    def forward(self, x):
        return super().forward(self.wrap(x)["hidden"])


def test_bad_inputs_name_the_argument(tmp_path):
    loader = DataLoader(_data(30), batch_size=30)
    with pytest.raises(ValueError, match=r"`layers`.*'wrap'.*_DictOut.*returned a dict"):
        tiny_trainer(tmp_path / "a", [ProbingCallback(layers=("wrap",), cv=3, on_error="raise")]).validate(
            _WithDict(), loader)
    with pytest.raises(ValueError, match=r"`concepts` to be keys of the batch; it holds \['colour', 'labels', 'size',"
                                         r" 'x'\], but got 'shape'"):
        tiny_trainer(tmp_path / "b", [ProbingCallback(layers=("carrier",), concepts="shape", on_error="raise")]
                     ).validate(_net(), DataLoader(_Concepts(), batch_size=32))
    few = TensorDataset(torch.randn(23, 8), torch.tensor([0] * 10 + [1] * 10 + [2] * 3))
    with pytest.raises(ValueError, match=r"`cv` to be at most 3.*smaller `cv` \(`cv=3`\)"):
        tiny_trainer(tmp_path / "c", [ProbingCallback(layers=("carrier",), on_error="raise")]).validate(
            _net(), DataLoader(few, batch_size=23))
    with pytest.raises(ValueError, match=r"`layers`.*'carier'.*Closest names: \['carrier'\]"):  # in setup
        tiny_trainer(tmp_path / "d", [ProbingCallback(layers=("carier",))]).validate(_net(), loader)
    with pytest.raises(ValueError, match=r"`layers`.*'auto'.*_Net has neither"):
        tiny_trainer(tmp_path / "e", [ProbingCallback()]).validate(_net(), loader)
    with pytest.raises(ValueError, match="`pooling`"):
        ProbingCallback(pooling="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`cv`"):
        ProbingCallback(cv=1)
    with pytest.raises(ValueError, match="`time_budget`"):
        ProbingCallback(time_budget=0)
    with warnings.catch_warnings():  # on_error="warn": a failure at epoch end is a warning, training goes on
        warnings.simplefilter("ignore")
        tiny_trainer(tmp_path / "f", [ProbingCallback(layers=("wrap",), cv=3)]).validate(_WithDict(), loader)
