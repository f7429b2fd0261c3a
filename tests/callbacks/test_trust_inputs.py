"""Issue 11, items 8, 12 (parts) and 14: input users have gets a clear error, a warning or is accepted.

8. probes whose samples differ in size, labels outside the model's classes; 12. ``num_samples`` larger than the
data, ``target_layer`` errors naming the layer; 14. ``SHAPCallback(background=...)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_xai import AttributionDriftCallback, GradCAMCallback, SHAPCallback
from lightning_xai.adapters import default_batch_to_inputs, resolve_targets
from lightning_xai.demo import ShapesCNN
from lightning_xai.functional import cam, grad_cam
from lightning_xai.probe import probe_from_dataloader
from tests.helpers import shapes_loaders

SHAP_FAST = dict(nsamples=8, completeness_tol=None, stages=("validate",), on_error="raise")


def _model(seed: int = 0) -> ShapesCNN:
    seed_everything(seed, verbose=False)
    return ShapesCNN(width=4)


def _trainer(tmp_path, callbacks, **kw) -> Trainer:
    opts = dict(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=tmp_path, limit_train_batches=2, callbacks=callbacks)
    return Trainer(**{**opts, **kw})


class _Ragged(Dataset):
    """Images of 12 rows at even indices, 16 rows at odd ones."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return torch.rand(3, 12 if i % 2 == 0 else 16, 16), i % 3


# ------------------------------------------------------------------------------ 8: samples of different sizes
@pytest.mark.parametrize("probe", [_Ragged(), [_Ragged()[i] for i in range(4)]], ids=["dataset", "list"])
def test_probe_samples_of_different_sizes_name_probe_and_which_indices(tmp_path, probe):
    _, va = shapes_loaders()
    cb = GradCAMCallback(probe=probe, on_error="raise")
    with pytest.raises(ValueError, match=r"Expected argument `probe` to be samples of one size") as err:
        _trainer(tmp_path, [cb]).validate(_model(), va)
    msg = str(err.value)
    assert "[0, 2]: ((3, 12, 16), int)" in msg and "[1, 3]: ((3, 16, 16), int)" in msg, msg
    assert "or one batch" in msg


def test_validation_dataset_of_different_sizes_names_the_dataloader(tmp_path):
    loader = DataLoader(_Ragged(), batch_size=1)  # validation itself runs, one sample per batch
    cb = GradCAMCallback(num_samples=4, on_error="raise")
    with pytest.raises(ValueError, match=r"dataloader's dataset \(_Ragged\)") as err:
        _trainer(tmp_path, [cb]).validate(_model(), loader)
    assert "`num_samples`" in str(err.value) and "[0, 2]" in str(err.value) and "`probe=`" in str(err.value)
    with pytest.raises(ValueError, match=r"dataloader's dataset \(_Ragged\).*\[1, 3\]: \(\(3, 16, 16\), int\)"):
        probe_from_dataloader(DataLoader(_Ragged(), batch_size=4), 4, default_batch_to_inputs)


def test_batches_padded_to_different_lengths_are_collated_together():
    """A collate_fn that pads each batch to its longest sample: the probe is collated in one go instead."""
    lengths = [3, 5, 2, 7]

    def pad(items):
        longest = max(len(x) for x, _ in items)
        x = torch.stack([torch.nn.functional.pad(x, (0, longest - len(x))) for x, _ in items])
        return x, torch.tensor([y for _, y in items])

    data = [(torch.ones(n), i % 2) for i, n in enumerate(lengths)]
    probe = probe_from_dataloader(DataLoader(data, batch_size=2, collate_fn=pad), 4, default_batch_to_inputs)
    assert probe.batch[0].shape == (4, 7)


def test_probe_batch_with_mismatched_batch_dimensions_names_probe(tmp_path):
    _, va = shapes_loaders()
    cb = GradCAMCallback(probe=(torch.zeros(3, 3, 16, 16), torch.tensor([0, 1])), on_error="raise")
    with pytest.raises(ValueError, match=r"`probe` to be a batch whose tensors share their first"):
        _trainer(tmp_path, [cb]).validate(_model(), va)


# ------------------------------------------------------------------------------ 8: labels outside the classes
_LABEL_5 = r"Expected argument `target` \('label'\) to be labels in \[0, 3\).*but got label 5 at probe position 2"
_PROBE_5 = (torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 5]))


@pytest.mark.parametrize("make", [
    lambda p: GradCAMCallback(probe=_PROBE_5, target="label", on_error="raise"),
    lambda p: SHAPCallback(probe=_PROBE_5, target="label", n_background=4, **SHAP_FAST),
    lambda p: AttributionDriftCallback(probe=_PROBE_5, target="label", store=str(p / "s.sqlite"), on_error="raise"),
    lambda p: AttributionDriftCallback(probe=_PROBE_5, target="label", store=str(p / "s.sqlite"), method="shap",
                                       method_kwargs={"n_background": 4, "nsamples": 8}, on_error="raise"),
], ids=["gradcam", "shap", "drift", "drift-shap"])
def test_label_outside_the_classes_is_a_clear_error(tmp_path, make):
    _, va = shapes_loaders()
    with pytest.raises(ValueError, match=_LABEL_5):
        _trainer(tmp_path, [make(tmp_path)]).validate(_model(), va)


def test_resolve_targets_checks_labels():
    logits = torch.zeros(3, 3)
    assert resolve_targets(logits, "label", torch.tensor([0.0, 2.0, 1.0])).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*label -1 at probe position 0"):
        resolve_targets(logits, "label", torch.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match=r"one class label per sample, shape \(3,\), but got labels of shape \(3, 3\)"):
        resolve_targets(logits, "label", torch.eye(3))
    with pytest.raises(ValueError, match=r"integer class labels"):
        resolve_targets(logits, "label", torch.tensor([0.5, 1.0, 2.0]))


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "eigencam"])
def test_functional_cam_names_the_layer_and_the_class_index(method):
    net, x = ShapesCNN(width=4), torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"`target_layer` \('head', a Linear\).*output is a tensor of shape \(2, 3\)"):
        cam(net, x, torch.tensor([0, 1]), net.head, method=method)
    with pytest.raises(ValueError, match=r"`target` to be class indices in \[0, 3\).*class index 7 at position 1"):
        cam(net, x, torch.tensor([0, 7]), net.features[8], method=method)


# ------------------------------------------------------------------------------ 12: num_samples and target_layer
def test_num_samples_larger_than_the_validation_set_warns_once(tmp_path):
    tr, va = shapes_loaders()
    cb = GradCAMCallback(num_samples=100, on_error="raise")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer(tmp_path, [cb], max_epochs=2).fit(_model(), tr, va)
    hits = [str(w.message) for w in record if "num_samples=100" in str(w.message)]
    assert len(hits) == 1, hits
    assert "SyntheticShapes) has only 16 samples; using 16" in hits[0]
    assert len(cb._probe) == 16


def test_target_layer_without_a_feature_map_is_named(tmp_path):
    _, va = shapes_loaders()
    cb = GradCAMCallback(num_samples=2, target_layer="head", on_error="raise")
    with pytest.raises(ValueError, match=r"`target_layer` \('head', a Linear\) to be a layer whose output is a "
                                         r"feature map.*but its output is a tensor of shape \(2, 3\)"):
        _trainer(tmp_path, [cb]).validate(_model(), va)


def test_target_layer_that_does_not_run_or_is_not_in_the_model_is_named():
    net = ShapesCNN(width=4)
    x, t = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"`target_layer` \(a Conv2d that is not a submodule of the ShapesCNN\)"):
        grad_cam(net, x, t, torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match=r"`target_layer` \('features.8', a BatchNorm2d\).*\(B, C, h, w\).*"
                                         r"its reshaped output is a tensor of shape \(2, 8\)"):
        grad_cam(net, x, t, net.features[8], reshape_transform=lambda a: a.mean((2, 3)))


def test_misspelt_target_layer_lists_close_names(tmp_path):
    _, va = shapes_loaders()
    cb = GradCAMCallback(target_layer="featurs.8", on_error="raise")
    with pytest.raises(ValueError, match=r"'featurs.8'. Closest names: \['features.8'"):
        _trainer(tmp_path, [cb]).validate(_model(), va)


# ------------------------------------------------------------------------------ 14: SHAPCallback(background=...)
def _neutral(n: int = 6) -> torch.Tensor:
    return torch.full((n, 3, 16, 16), 0.5)


@pytest.mark.parametrize("kind", ["tensor", "tuple", "dataset", "list"])
def test_shap_background_given_by_the_user_is_used_and_kept_in_the_state(tmp_path, kind):
    _, va = shapes_loaders()
    x, y = _neutral(), torch.tensor([0, 1, 2, 0, 1, 2])
    background = {"tensor": x, "tuple": (x, y), "dataset": TensorDataset(x, y),
                  "list": [(x[i], int(y[i])) for i in range(6)]}[kind]
    cb = SHAPCallback(num_samples=2, n_background=32, background=background, **SHAP_FAST)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _trainer(tmp_path, [cb]).validate(_model(), va)
    assert not [w for w in record if "n_background" in str(w.message)]  # the user's own: never "too few"
    used = cb._background.batch
    assert torch.equal(used if isinstance(used, torch.Tensor) else used[0], x)
    state = cb.state_dict()
    restored = SHAPCallback(num_samples=2, n_background=32, **SHAP_FAST)
    restored.load_state_dict(state)
    assert restored._background is not None and len(restored._background) == 6


def test_shap_background_given_wins_over_a_restored_one(tmp_path):
    _, va = shapes_loaders()
    drawn = SHAPCallback(num_samples=2, n_background=4, **SHAP_FAST)
    _trainer(tmp_path, [drawn]).validate(_model(), va)
    cb = SHAPCallback(num_samples=2, n_background=4, background=_neutral(3), **SHAP_FAST)
    cb.load_state_dict(drawn.state_dict())
    _trainer(tmp_path, [cb]).validate(_model(), va)
    assert torch.equal(cb._background.batch, _neutral(3))


def test_shap_background_changes_the_base_values(tmp_path):
    """Base values are E f(background): a constant background gives f(constant) for every probe."""
    _, va = shapes_loaders()
    model = _model()
    cb = SHAPCallback(num_samples=2, n_background=4, background=_neutral(1), **SHAP_FAST)
    _trainer(tmp_path, [cb]).validate(model, va)
    with torch.no_grad():
        expected = model.eval()(_neutral(1))[0]
    npz = np.load(next(tmp_path.rglob("shap_values.npz")))
    np.testing.assert_allclose(npz["base_values"], expected[npz["targets"]].numpy(), atol=1e-5)


@pytest.mark.parametrize(("background", "error", "match"), [
    (torch.zeros(0, 3, 16, 16), ValueError, r"`background` to be at least one sample.*\(0, 3, 16, 16\)"),
    (TensorDataset(torch.zeros(0, 3)), ValueError, r"`background` to be at least one sample.*empty TensorDataset"),
    ({}, ValueError, r"`background` to be at least one sample"),
    ("noise.pt", TypeError, r"`background` to be a tensor \(single-input models\).*'str'"),
])
def test_shap_background_without_samples_is_refused_in_the_constructor(background, error, match):
    with pytest.raises(error, match=match):
        SHAPCallback(background=background)


@pytest.mark.parametrize(("background", "match"), [
    (torch.zeros(4, 3, 8, 8), r"`background` to be samples like the probe's.*input 0 \(3, 16, 16\).*"
                              r"but got 'inputs input 0 \(3, 8, 8\)'"),
    ((torch.zeros(4, 3, 16, 16), torch.zeros(4, 3, 16, 16)), None),  # labels are not inputs: accepted
    ({"pixel_values": torch.zeros(4, 3, 16, 16)}, r"`background` to be samples like the probe's"),
])
def test_shap_background_not_matching_the_probe_is_named(tmp_path, background, match):
    _, va = shapes_loaders()
    cb = SHAPCallback(num_samples=2, background=background, **SHAP_FAST)
    if match is None:
        _trainer(tmp_path, [cb]).validate(_model(), va)
        return
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [cb]).validate(_model(), va)


def test_drift_with_shap_accepts_a_background_in_method_kwargs(tmp_path):
    tr, va = shapes_loaders()
    cb = AttributionDriftCallback(method="shap", store=str(tmp_path / "s.sqlite"), num_samples=2, on_error="raise",
                                  method_kwargs={"background": _neutral(2), "nsamples": 8})
    _trainer(tmp_path, [cb]).fit(_model(), tr, va)
    assert torch.equal(cb._background.batch, _neutral(2))
    again = AttributionDriftCallback(method="shap", store=str(tmp_path / "s.sqlite"), num_samples=2)
    again.load_state_dict(cb.state_dict())
    assert torch.equal(again._background.batch, _neutral(2))
