"""The opt-in faithfulness check of GradCAMCallback and SHAPCallback: off by default (nothing logged, same
keys); on, the logged AUCs equal :mod:`lightning_xai.functional.faithfulness` on the saved maps, and the
random control comes from the callback's own seeded generator, never the global RNG."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_xai import GradCAMCallback, SHAPCallback
from lightning_xai._inputs import Scorer
from lightning_xai.adapters import ModelInputs
from lightning_xai.demo import ShapesCNN
from lightning_xai.explainers.faithfulness import METRICS, FaithfulnessCheck
from lightning_xai.functional.faithfulness import deletion_auc, insertion_auc
from lightning_xai.sinks import read_manifest
from tests.helpers import ROOT, scalar_values, tiny_trainer

STEPS = 6
FAST = {"nsamples": 16, "max_nsamples": 32, "n_background": 8, "max_batch": 64}


def _model() -> ShapesCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ShapesCNN()


def _validate(tmp_path: Path, cb: Any, dm: Any) -> tuple[nn.Module, Path, list[dict], Tensor]:
    """One checkpoint-free ``validate`` from a seeded global RNG; the model, the xai folder, the manifest
    lines and the global RNG state after the run."""
    model = _model()
    torch.manual_seed(123)
    tiny_trainer(tmp_path, [cb]).validate(model, datamodule=dm)
    root = next(tmp_path.rglob("manifest.jsonl")).parent
    return model, root, list(read_manifest(root / "manifest.jsonl")), torch.get_rng_state()


def _aucs(model: nn.Module, x: torch.Tensor, att: torch.Tensor, target: torch.Tensor, baseline: str) -> dict:
    kw = {"steps": STEPS, "baseline": baseline}
    return {
        "deletion_auc": deletion_auc(model, x, att, target, **kw),
        "insertion_auc": insertion_auc(model, x, att, target, **kw),
    }


def test_gradcam_off_logs_nothing_and_on_matches_the_functional(tmp_path, shapes_dm):
    off = GradCAMCallback(
        num_samples=4, methods=("gradcam", "gradcam++"), on_error="raise", stages=("validate",)
    )
    on = GradCAMCallback(
        num_samples=4,
        methods=("gradcam", "gradcam++"),
        on_error="raise",
        stages=("validate",),
        faithfulness=True,
        faithfulness_steps=STEPS,
        faithfulness_baseline="mean",
    )
    assert off.state_key == (
        "GradCAMCallback{'num_samples': 4, 'target': 'pred', 'methods': ['gradcam', "
        "'gradcam++'], 'target_layer': None}"
    )  # unchanged by the new arguments
    assert on.state_key != off.state_key
    _, root_off, recs_off, rng_off = _validate(tmp_path / "off", off, shapes_dm)
    model, root, recs, rng_on = _validate(tmp_path / "on", on, shapes_dm)
    assert torch.equal(rng_off, rng_on)  # the check drew nothing from the global RNG
    assert not any("faithfulness" in tag for r in recs_off for tag in r["scalars"])
    assert not any("faithfulness" in f for r in recs_off for f in r["files"])
    assert "faithfulness" not in json.loads(next(root_off.rglob("summary_gradcam.json")).read_text())

    x = on._probe.batch[0]
    with torch.no_grad():
        target = model.eval()(x).argmax(-1)  # "pred": the class the maps explain
    control = torch.rand((4, 32, 32), generator=torch.Generator().manual_seed(0))
    random = _aucs(model, x, control, target, "mean")
    for rec in recs:
        method = rec["method"]
        maps = np.load(root / next(f for f in rec["files"] if f.endswith(f"gradcam_{method}.npy")))
        np.testing.assert_array_equal(maps, np.load(next(root_off.rglob(f"gradcam_{method}.npy"))))
        direct = _aucs(model, x, torch.from_numpy(maps), target, "mean")
        direct.update({f"{k}_random": v for k, v in random.items()})
        summary = json.loads(next(root.rglob(f"summary_{method}.json")).read_text())["faithfulness"]
        assert (summary["steps"], summary["baseline"]) == (STEPS, "mean")
        for metric in METRICS:
            tag = f"xai/gradcam/faithfulness/{method}/{metric}"
            assert rec["scalars"][tag] == pytest.approx(float(direct[metric].mean()), abs=1e-5)
            assert scalar_values(tmp_path / "on", tag)[0][1] == pytest.approx(rec["scalars"][tag], abs=1e-6)
            np.testing.assert_allclose(summary[metric], direct[metric].numpy(), atol=1e-5)
        assert any(f.endswith("faithfulness_" + method + "_curves.png") for f in rec["files"])
    # a trained-free CNN still shows the shape of the numbers: AUCs are areas under probabilities
    assert all(0.0 <= v <= 1.0 for r in recs for k, v in r["scalars"].items() if "faithfulness" in k)


def test_shap_on_matches_the_functional_on_saved_values(tmp_path, shapes_dm):
    cb = SHAPCallback(
        num_samples=3,
        seed=3,
        on_error="raise",
        stages=("validate",),
        faithfulness=True,
        faithfulness_steps=STEPS,
        **FAST,
    )
    model, root, recs, _ = _validate(tmp_path, cb, shapes_dm)
    (rec,) = recs
    npz = np.load(root / next(f for f in rec["files"] if f.endswith("shap_values.npz")))
    x, phi = torch.from_numpy(npz["data_input"]), torch.from_numpy(npz["input"])
    target = torch.from_numpy(npz["targets"])
    direct = _aucs(model, x, phi, target, "blur")
    control = torch.rand(tuple(phi.shape), generator=torch.Generator().manual_seed(3))
    direct.update({f"{k}_random": v for k, v in _aucs(model, x, control, target, "blur").items()})
    summary = json.loads((root / next(f for f in rec["files"] if f.endswith("summary.json"))).read_text())
    assert summary["faithfulness"] == {"steps": STEPS, "baseline": "blur", "score": "probability"}
    for metric in METRICS:
        assert rec["scalars"][f"xai/shap/faithfulness/input/{metric}"] == pytest.approx(
            float(direct[metric].mean()), abs=1e-5
        )
        per_sample = [s["faithfulness"]["input"][metric] for s in summary["samples"]]
        np.testing.assert_allclose(per_sample, direct[metric].numpy(), atol=1e-5)


class _TwoInputs(nn.Module):
    """An image and a side vector of features, both batched."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = _model()
        self.side = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        return self.cnn(x) + self.side(side)


def test_other_inputs_follow_their_sample_and_other_kinds_warn_once():
    torch.manual_seed(5)
    model, x, side = _TwoInputs().eval(), torch.rand(3, 3, 32, 32), torch.randn(3, 4)
    inputs, target = ModelInputs((x, side)), torch.tensor([0, 1, 2])
    check = FaithfulnessCheck(steps=STEPS, baseline="zero", seed=0)
    values = (torch.randn(3, 3, 32, 32), torch.randn(3, 4))
    cb = Scorer(forward_fn=lambda m, mi: m(*mi.args))  # the callback's path
    shap = SimpleNamespace(values=values, explained=[True, True])  # a ShapResult of both inputs
    before = torch.get_rng_state()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            out = check.measure_inputs(cb, model, inputs, ["input_0", "input_1"], shap, target)
    assert torch.equal(before, torch.get_rng_state())
    assert [str(w.message).count("tabular input 'input_1' is skipped") for w in caught] == [1]
    assert list(out) == ["input_0"]
    for i in range(3):
        fwd = lambda m, rows, i=i: m(rows, side[i : i + 1].expand(len(rows), -1))
        expect = deletion_auc(
            model,
            x[i : i + 1],
            values[0][i : i + 1],
            target[i : i + 1],
            steps=STEPS,
            baseline="zero",
            forward_fn=fwd,
        )
        assert float(out["input_0"]["deletion_auc"][i]) == pytest.approx(float(expect), abs=1e-6)


@pytest.mark.parametrize("cls", [GradCAMCallback, SHAPCallback])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"faithfulness_steps": 0},
            ValueError,
            "`faithfulness_steps` to be an integer larger than 0, but got 0",
        ),
        (
            {"faithfulness_baseline": "noise"},
            ValueError,
            r"`faithfulness_baseline` to be one of \['blur', 'mean', 'zero'\]",
        ),
        ({"faithfulness": "yes"}, TypeError, "`faithfulness` to be True or False, but got 'yes'"),
    ],
)
def test_bad_arguments_name_the_argument(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_configurable_from_the_yaml_preset(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    from lightning_xai.datasets import SyntheticShapesDataModule

    preset = ROOT / "callbacks" / "gradcam.yaml"
    cli = LightningCLI(
        ShapesCNN,
        SyntheticShapesDataModule,
        run=False,
        save_config_callback=None,
        args=[
            "--config",
            str(preset),
            "--trainer.logger",
            "false",
            "--trainer.callbacks.init_args.faithfulness",
            "true",
            "--trainer.callbacks.init_args.faithfulness_steps",
            "10",
            "--trainer.callbacks.init_args.faithfulness_baseline",
            "zero",
        ],
    )
    cb = next(cb for cb in cli.trainer.callbacks if isinstance(cb, GradCAMCallback))
    assert (cb.faithfulness, cb.faithfulness_steps, cb.faithfulness_baseline) == (True, 10, "zero")
    assert cb._faith is not None and cb._faith.baseline == "zero"
