"""The explainer layer: the registry, explainers without a Trainer, and a third party's explainer used by drift and by
the confidently-wrong gallery without any edit to them."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch import seed_everything
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import AttributionDriftCallback, CalibrationCallback, GradCAMCallback, SHAPCallback, XAICallback
from lightning_xai._inputs import Scorer, input_kind, input_names
from lightning_xai.adapters import ModelInputs
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.demo import ShapesCNN
from lightning_xai.explainers import (
    CAMExplainer,
    Explainer,
    Explanation,
    ShapExplainer,
    get_explainer,
    list_explainers,
    register_explainer,
    unregister_explainer,
)
from lightning_xai.explainers._base import targets_of
from lightning_xai.functional import CAM_METHODS, grad_cam
from lightning_xai.sinks.store import AttributionStore
from tests.helpers import ROOT, scalar_values, tiny_trainer


class InputXGradient(Explainer):
    """A third party's method: input x gradient of the target's logit, one value per input element (signed)."""

    name = "toy_input_x_gradient"
    calls = 0

    def explain(self, model, inputs, target="pred", scorer=None):
        type(self).calls += 1
        scorer = scorer or Scorer()
        x = inputs.args[0].detach().clone().requires_grad_(True)
        logits = scorer.logits(scorer(model, inputs.replace(0, x)))
        classes = targets_of(logits.detach(), target, inputs)
        (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), x)
        names = input_names(inputs)
        return Explanation(method=self.name, values={names[0]: (x * grad).detach().float().cpu()},
                           inputs={names[0]: x.detach().cpu()}, kinds={names[0]: input_kind(names[0], x)},
                           target=classes.cpu(), prediction=logits.argmax(-1).cpu(),
                           confidence=logits.softmax(-1).max(-1).values.detach().cpu())


@pytest.fixture
def toy():
    register_explainer(InputXGradient.name, InputXGradient)
    yield InputXGradient.name
    unregister_explainer(InputXGradient.name)


def test_registry_lists_every_cam_method_and_shap_and_names_unknown_ones():
    names = list_explainers()
    assert set(CAM_METHODS) | {"shap"} <= set(names) and names == sorted(names)
    assert isinstance(get_explainer("layercam"), CAMExplainer) and get_explainer("layercam").method == "layercam"
    assert isinstance(get_explainer("shap", nsamples=8), ShapExplainer)
    with pytest.raises(ValueError, match=r"registered explainer.*did you mean \['gradcam'"):
        get_explainer("gradcan")
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("shap", ShapExplainer)
    with pytest.raises(ValueError, match="other than 'auto'"):
        register_explainer("auto", ShapExplainer)


def test_cam_explainer_without_a_trainer_equals_the_functional_grad_cam():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3)).eval()
    x = torch.rand(2, 3, 8, 8)
    expl = get_explainer("gradcam", target_layer="0").explain(net, ModelInputs((x,)), target=torch.tensor([2, 1]))
    ref = grad_cam(net, x, torch.tensor([2, 1]), net[0])
    assert torch.allclose(expl.values["input"], ref.float(), atol=1e-6)
    assert expl.layer == "0" and not expl.signed and expl.target.tolist() == [2, 1]
    assert expl.drift_arrays().keys() == {"gradcam"} and expl.settings["layer"] == "0"


def test_shap_explainer_needs_a_background_and_is_complete():
    net = nn.Linear(3, 2)
    shap = ShapExplainer(nsamples=8, completeness_tol=None)
    with pytest.raises(ValueError, match="`background`"):
        shap.explain(net, ModelInputs((torch.rand(2, 3),)))
    shap.background = ModelInputs((torch.zeros(4, 3),))
    x = torch.rand(2, 3)
    expl = shap.explain(net, ModelInputs((x,)), target=torch.tensor([0, 1]))
    logits = net(x).detach()
    total = expl.values["input"].sum(1) + expl.base_values  # a linear model: exact
    assert torch.allclose(total, logits.gather(1, torch.tensor([[0], [1]]))[:, 0], atol=1e-5)


def test_a_registered_explainer_drifts_without_edits_to_the_drift_callback(tmp_path, toy):
    seed_everything(0)
    train = DataLoader(SyntheticShapes(32, image_size=16, seed=1), batch_size=8)
    val = DataLoader(SyntheticShapes(16, image_size=16, seed=2), batch_size=8)
    store = tmp_path / "s.sqlite"
    drift = AttributionDriftCallback(method=toy, store=str(store), run="toy", num_samples=4, on_error="raise")
    tiny_trainer(tmp_path, [drift], max_epochs=2).fit(ShapesCNN(width=4), train, val)
    with AttributionStore(store) as s:
        snaps = s.snapshots("toy")
        assert [i.method for i in snaps] == [toy, toy]
        arrays = s.load_snapshot(snaps[-1]).arrays
    assert set(arrays) == {"input"} and tuple(arrays["input"].shape) == (4, 16, 16)  # summed over channels
    values = scalar_values(tmp_path, "xai/drift/spearman/previous")
    assert len(values) == 1 and -1.0 <= values[0][1] < 1.0  # epoch 1 against epoch 0: training moved the maps


def test_drift_refuses_an_unknown_method_listing_the_registered_ones():
    with pytest.raises(ValueError, match=r"`method`.*registered explainer.*'shap'"):
        AttributionDriftCallback(method="no-such-method")


class _Toy(XAICallback):
    name = "toy"

    def _emit(self, result, inputs, probe, sink):
        sink.scalar("mean", float(result.values["input"].mean()))


def test_the_gallery_uses_any_attribution_callback_through_its_public_explain(tmp_path, toy):
    seed_everything(0)
    val = DataLoader(SyntheticShapes(32, image_size=16, seed=2), batch_size=8)
    toy_cb = _Toy(num_samples=2, explainer=get_explainer(toy), on_error="raise", stages=("validate",))
    calibration = CalibrationCallback(n_bins=5, gallery_size=4, stages=("validate",), on_error="raise")
    InputXGradient.calls = 0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [calibration, toy_cb], limit_val_batches=None).validate(ShapesCNN(width=4), val)
    assert not [w for w in record if "confidently-wrong" in str(w.message)]
    assert list(tmp_path.rglob("confidently_wrong.png"))
    assert InputXGradient.calls == 2  # the toy callback's probe, and the gallery's mistakes


def test_callbacks_expose_their_explainer_read_only():
    cam = GradCAMCallback(methods=("gradcam", "layercam"), target_layer="conv")
    assert cam.explainer.method == "gradcam" and [e.method for e in cam.explainers.values()] == ["gradcam",
                                                                                                 "layercam"]
    shap = SHAPCallback(n_background=8, engine="kernel")
    assert shap.explainer.n_background == 8 and shap.engine == "kernel" and shap.n_background == 8
    with pytest.raises(AttributeError):
        shap.explainer = None  # type: ignore[misc]


def test_a_checkpoint_saved_before_the_explainer_layer_still_audits(tmp_path, monkeypatch):
    """tests/data/pre_explainers.ckpt was written by 58e5181 (tests/data/make_pre_explainers_ckpt.py): its probes and
    SHAP backgrounds (the drift callback's one level down, in its hidden SHAP callback's state) are restored."""
    from lightning_xai.probe import Probe

    ckpt = ROOT / "tests" / "data" / "pre_explainers.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["callbacks"]
    monkeypatch.chdir(tmp_path)  # the drift store was given as the relative "s.sqlite"
    fast = {"n_background": 4, "nsamples": 8, "completeness_tol": None}
    cam = GradCAMCallback(num_samples=2, on_error="raise")
    shap = SHAPCallback(num_samples=2, on_error="raise", **fast)
    drift = AttributionDriftCallback(method="shap", store="s.sqlite", run="old", num_samples=2, method_kwargs=fast,
                                     on_error="raise")
    val = DataLoader(SyntheticShapes(16, image_size=16, seed=2), batch_size=8)
    (results,) = tiny_trainer(tmp_path, [cam, shap, drift]).validate(ShapesCNN(width=4), val, ckpt_path=str(ckpt))
    for cb in (cam, shap, drift):
        assert cb.state_key in saved
        assert cb.state_dict()["probe"]["indices"] == saved[cb.state_key]["probe"]["indices"]
    old_shap = Probe.from_state(saved[shap.state_key]["background"])
    old_drift = Probe.from_state(saved[drift.state_key]["explainer"]["background"])
    assert Probe.from_state(shap.state_dict()["background"]).indices == old_shap.indices
    assert Probe.from_state(drift.state_dict()["background"]).indices == old_drift.indices
    assert drift.run_name == "old" and "xai/shap/completeness/mean" in results


def test_grad_cam_and_shap_read_an_ambiguous_clip_alike_and_say_so():
    """(B, 8, 16, H, W): neither dim looks like channels. Both explainers read it by one rule and warn, naming
    `video_layout=`; setting it silences the warning; an unambiguous clip never warns."""
    net = nn.Sequential(nn.Conv3d(8, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    clip = ModelInputs((torch.rand(2, 8, 16, 6, 6),))
    shap = ShapExplainer(nsamples=4, completeness_tol=None)
    shap.background = ModelInputs((torch.zeros(2, 8, 16, 6, 6),))
    cam = CAMExplainer("gradcam", target_layer="0")
    with pytest.warns(RuntimeWarning, match="video_layout="):
        layouts = {cam.explain(net, clip).layouts["input"], shap.explain(net, clip).layouts["input"]}
    assert layouts == {"BTCHW"}
    shap.video_layout = cam.video_layout = "BCTHW"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert cam.explain(net, clip).layouts["input"] == shap.explain(net, clip).layouts["input"] == "BCTHW"


def test_the_gallery_takes_a_registered_explainer_by_name(tmp_path, toy):
    seed_everything(0)
    val = DataLoader(SyntheticShapes(32, image_size=16, seed=2), batch_size=8)
    calibration = CalibrationCallback(n_bins=5, gallery_size=4, gallery_method=toy, stages=("validate",),
                                      on_error="raise")
    InputXGradient.calls = 0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [calibration], limit_val_batches=None).validate(ShapesCNN(width=4), val)
    assert not [w for w in record if "confidently-wrong" in str(w.message)]
    assert list(tmp_path.rglob("confidently_wrong.png")) and InputXGradient.calls == 1
    with pytest.raises(ValueError, match="`gallery_method`.*registered explainer"):
        CalibrationCallback(gallery_method="no-such-method")
    with pytest.raises(ValueError, match="`gallery_method`.*no background"):
        CalibrationCallback(gallery_method="shap")
