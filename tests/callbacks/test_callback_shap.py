"""SHAPCallback end to end: artifact contract, TensorBoard tags, tokens, checkpoint audits, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import SHAPCallback, load_shap_explanation
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks import read_manifest
from tests.helpers import FAST, TextModel, Tokens, read_events, scalar_values, tiny_trainer


def test_image_model_artifacts_and_tags(tmp_path, shapes_dm):
    seed_everything(0)
    cb = SHAPCallback(num_samples=3, on_error="raise", **FAST)
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=1)
    trainer.fit(ShapesCNN(), datamodule=shapes_dm)
    ev = read_events(tmp_path)
    assert "xai/shap/input" in ev["images"]
    for tag in ("completeness/mean", "completeness/max", "completeness/relative_median", "gini", "converged",
                "share/input", "nonfinite"):
        assert f"xai/shap/{tag}" in ev["scalars"], tag
    rec = next(r for m in tmp_path.rglob("manifest.jsonl") for r in read_manifest(m))
    root = next(tmp_path.rglob("manifest.jsonl")).parent
    npz = np.load(root / next(f for f in rec["files"] if f.endswith("shap_values.npz")))
    assert npz["input"].shape == (3, 3, 32, 32)
    assert npz["base_values"].shape == npz["predictions"].shape == npz["targets"].shape == (3,)
    summary = json.loads((root / next(f for f in rec["files"] if f.endswith("summary.json"))).read_text())
    assert len(summary["samples"]) == 3
    explanation = load_shap_explanation(root / rec["files"][0].rsplit("/", 1)[0])
    assert explanation.values.shape == (3, 3, 32, 32) and explanation.data.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(explanation.base_values, npz["base_values"])
    for s, phi in zip(summary["samples"], npz["input"]):  # completeness, as reported, holds for the saved values
        assert abs(phi.sum() - (s["output"] - s["base_value"])) <= s["relative_error"] * abs(
            s["output"] - s["base_value"]) + 1e-4


def test_text_model_is_explained_at_its_embeddings(tmp_path):
    loader = DataLoader(Tokens(32), batch_size=8)
    cb = SHAPCallback(num_samples=4, on_error="raise", stages=("validate",), **FAST)
    tiny_trainer(tmp_path, [cb]).validate(TextModel(), loader)
    assert "xai/shap/input_ids" in read_events(tmp_path)["images"]
    root = next(tmp_path.rglob("manifest.jsonl")).parent
    npz = np.load(next(root.rglob("shap_values.npz")))
    assert npz["input_ids"].shape == (4, 12) and "attention_mask" not in npz
    summary = json.loads(next(root.rglob("summary.json")).read_text())
    tokens = summary["samples"][0]["tokens_input_ids"]
    assert len(tokens) == 10 and all(t.startswith("#") for t, _ in tokens)  # padding masked out


def test_checkpoint_audit_reuses_probe_and_background(tmp_path, shapes_dm):
    seed_everything(0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit_cb = SHAPCallback(num_samples=2, on_error="raise", **FAST)
    tiny_trainer(tmp_path / "fit", [fit_cb, ckpt], enable_checkpointing=True).fit(ShapesCNN(), datamodule=shapes_dm)
    audit = SHAPCallback(num_samples=2, on_error="raise", **FAST)
    tiny_trainer(tmp_path / "audit", [audit]).validate(ShapesCNN(), datamodule=shapes_dm,
                                                       ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert audit._background.indices == fit_cb._background.indices
    assert torch.equal(audit._background.batch[0], fit_cb._background.batch[0])
    a = np.load(next((tmp_path / "fit").rglob("shap_values.npz")))["input"]
    b = np.load(next((tmp_path / "audit").rglob("shap_values.npz")))["input"]
    np.testing.assert_allclose(a, b, atol=1e-5)  # same weights, probe, background and seed: same values


class _IdsOnly(ShapesCNN):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 2)

    def forward(self, input_ids):
        return self.fc(input_ids.float())

    def validation_step(self, batch, batch_idx):
        return None


def test_integer_inputs_without_embedding_name_the_argument(tmp_path):
    ids = torch.randint(0, 9, (8, 12))
    loader = DataLoader([{"input_ids": i, "labels": torch.tensor(0)} for i in ids], batch_size=4)
    cb = SHAPCallback(num_samples=2, on_error="raise", stages=("validate",), **FAST)
    with pytest.raises(ValueError, match="embedding_layer"):
        tiny_trainer(tmp_path, [cb]).validate(_IdsOnly(), loader)


@pytest.mark.parametrize(("kwargs", "match"), [({"n_background": 0}, "`n_background`"),
                                               ({"engine": "lime"}, "`engine`"),
                                               ({"completeness_tol": -1.0}, "`completeness_tol`"),
                                               ({"sampling": "sobol"}, "`sampling`")])
def test_constructor_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SHAPCallback(**kwargs)


# ------------------------------------------------------------------------------------ targets and heads
class _TwoHeads(ShapesCNN):
    """A Teacher/Student-like model: a dict of two heads over the same features."""

    def __init__(self) -> None:
        super().__init__(num_classes=3)
        self.student = nn.Linear(3, 3)

    def forward(self, x):
        teacher = super().forward(x)
        return {"teacher": teacher, "student": self.student(teacher)}

    def validation_step(self, batch, batch_idx):
        return None


def _student(output):
    return output["student"]


def _npz(root):
    return np.load(next(root.rglob("shap_values.npz")))


@pytest.mark.parametrize("output", ["student", _student, "tests.callbacks.test_callback_shap._student"])
def test_output_picks_the_head_by_key_or_callable(tmp_path, shapes_dm, output):
    seed_everything(0)
    model = _TwoHeads()
    cb = SHAPCallback(num_samples=2, output=output, on_error="raise", stages=("validate",), **FAST)
    tiny_trainer(tmp_path, [cb]).validate(model, datamodule=shapes_dm)
    npz = _npz(tmp_path)
    x = torch.from_numpy(npz["data_input"])
    with torch.no_grad():
        student = model.eval()(x)["student"]
    np.testing.assert_array_equal(npz["predictions"], student.argmax(-1).numpy())
    np.testing.assert_allclose(npz["outputs"], student.gather(1, student.argmax(-1, keepdim=True))[:, 0].numpy(),
                               rtol=1e-5, atol=1e-5)


def test_no_logits_like_output_says_how_to_set_output_or_forward_fn(tmp_path, shapes_dm):
    cb = SHAPCallback(num_samples=2, on_error="raise", stages=("validate",), **FAST)
    with pytest.raises(ValueError, match="(?s)`output=`.*`forward_fn=`"):
        tiny_trainer(tmp_path, [cb]).validate(_TwoHeads(), datamodule=shapes_dm)
    with pytest.raises(ValueError, match="`output`"):
        SHAPCallback(output=2.5)


def test_top_k_explains_the_ranked_classes(tmp_path, shapes_dm):
    seed_everything(0)
    model = ShapesCNN()
    one = SHAPCallback(num_samples=3, on_error="raise", stages=("validate",), **FAST)
    tiny_trainer(tmp_path / "one", [one]).validate(model, datamodule=shapes_dm)
    top = SHAPCallback(num_samples=3, top_k=3, on_error="raise", stages=("validate",), **FAST)
    tiny_trainer(tmp_path / "top", [top]).validate(model, datamodule=shapes_dm)
    a, b = _npz(tmp_path / "one"), _npz(tmp_path / "top")
    np.testing.assert_allclose(a["input"], b["input"], atol=1e-6)  # rank 1 is the usual artifact
    assert b["input_top_k"].shape == (3, 3, 3, 32, 32) and b["top_k_classes"].shape == (3, 3)
    np.testing.assert_array_equal(b["input_top_k"][:, 0], b["input"])
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(b["data_input"]))
    np.testing.assert_array_equal(b["top_k_classes"], logits.topk(3, dim=-1).indices.numpy())
    for r in range(3):  # each rank's values add up to its own f(x) - E f
        total = b["input_top_k"][:, r].reshape(3, -1).sum(1)
        np.testing.assert_allclose(total, b["outputs_top_k"][:, r] - b["base_values_top_k"][:, r], rtol=0.05,
                                   atol=0.05)
    assert {"xai/shap/input/top2", "xai/shap/input/top3"} <= set(read_events(tmp_path / "top")["images"])
    folder = next((tmp_path / "top").rglob("shap_values.npz")).parent
    explanation = load_shap_explanation(folder, top_k=True)
    assert explanation.values.shape == (3, 3, 32, 32, 3) and explanation.base_values.shape == (3, 3)
    summary = json.loads((folder / "summary.json").read_text())
    assert [c["class"] for c in summary["samples"][0]["top_k"]] == b["top_k_classes"][0].tolist()
    with pytest.raises(ValueError, match="`top_k`"):
        SHAPCallback(top_k=2, target="label")


# ------------------------------------------------------------------------------------ bad input, honestly reported
def test_small_data_for_the_background_warns_and_uses_what_exists(tmp_path):
    from lightning_xai.datasets import SyntheticShapes

    loader = DataLoader(SyntheticShapes(num_samples=6, image_size=32), batch_size=4)
    cb = SHAPCallback(num_samples=2, n_background=32, nsamples=16, max_nsamples=32, on_error="raise",
                      stages=("validate",))
    with pytest.warns(UserWarning, match=r"n_background=32 but the dataloader's dataset \(\w+\) has only 6 "):
        tiny_trainer(tmp_path, [cb]).validate(ShapesCNN(), loader)
    assert len(cb._background) == 6


class _NaNGrad(torch.autograd.Function):
    """Identity forward; its backward makes the gradient of the first feature NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        grad[:, 0] = float("nan")
        return grad


class _Tabular(ShapesCNN):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(_NaNGrad.apply(x))

    def validation_step(self, batch, batch_idx):
        return None


def test_nonfinite_values_are_warned_logged_and_not_plotted(tmp_path):
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(list(zip(x, torch.arange(16) % 2)), batch_size=8)
    cb = SHAPCallback(num_samples=4, n_background=8, nsamples=16, completeness_tol=None, on_error="raise",
                      stages=("validate",))
    with pytest.warns(RuntimeWarning, match="non-finite SHAP values"):
        tiny_trainer(tmp_path, [cb]).validate(_Tabular(), loader)
    assert scalar_values(tmp_path, "xai/shap/nonfinite")[0][1] == 4  # one NaN feature per probe
    npz = _npz(tmp_path)
    assert np.isnan(npz["input"][:, 0]).all() and np.isfinite(npz["input"][:, 1:]).all()


# ------------------------------------------------------------------------------------ shap's own explainers as engines
class _Linear(ShapesCNN):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(x)

    def validation_step(self, batch, batch_idx):
        return None


@pytest.mark.parametrize("engine", ["deep", "kernel", "partition", "shap-gradient", "gradient"])
def test_every_engine_gives_the_closed_form_on_a_linear_model(tmp_path, engine):
    """For f(x) = w x + b every engine's SHAP values are w (x - E x') for the background it uses; shap's
    GradientExplainer draws its baselines at random, so it is only near (our engine uses every one)."""
    seed_everything(0)
    x = torch.randn(24, 5, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(list(zip(x, torch.arange(24) % 2)), batch_size=8)
    model = _Linear()
    cb = SHAPCallback(num_samples=4, n_background=8, nsamples=256, engine=engine, on_error="raise",
                      stages=("validate",))
    tiny_trainer(tmp_path, [cb]).validate(model, loader)
    npz = _npz(tmp_path)
    background = cb._background.batch[0]
    w = model.fc.weight.detach()[torch.from_numpy(npz["targets"])]
    expected = w * (torch.from_numpy(npz["data_input"]) - background.mean(0))
    tol = 0.1 if engine == "shap-gradient" else 1e-4
    np.testing.assert_allclose(npz["input"], expected.numpy(), atol=tol)
    np.testing.assert_allclose(npz["completeness_error"], 0, atol=tol)
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["engine"] == engine


def test_deep_engine_names_the_layers_it_cannot_handle(tmp_path):
    loader = DataLoader(Tokens(32), batch_size=8)

    class _Attention(TextModel):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, input_ids, attention_mask):
            e = self.emb(input_ids)
            e = self.attn(e, e, e, need_weights=False)[0] * attention_mask[..., None]
            return self.fc(e.sum(1) / attention_mask.sum(1, keepdim=True))

    cb = SHAPCallback(num_samples=2, n_background=4, engine="deep", on_error="raise", stages=("validate",))
    with pytest.warns(UserWarning, match="(?s)DeepExplainer does not handle.*attn.*engine='gradient'"):
        tiny_trainer(tmp_path, [cb]).validate(_Attention(), loader)
    assert "xai/shap/completeness/mean" in read_events(tmp_path)["scalars"]  # the additivity error, logged


class _TwoTowers(TextModel):
    """Teacher and Student text towers over the same token ids: two embeddings of one vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self.student_emb = nn.Embedding(50, 4, padding_idx=0)
        self.student_fc = nn.Linear(4, 2)

    def forward(self, input_ids, attention_mask):
        pooled = attention_mask.sum(1, keepdim=True)
        student = self.student_emb(input_ids) * attention_mask[..., None]
        return {"teacher": super().forward(input_ids, attention_mask),
                "student": self.student_fc(student.sum(1) / pooled)}


def test_several_token_embeddings_must_be_named_per_head(tmp_path):
    loader = DataLoader(Tokens(32), batch_size=8)
    seed_everything(0)
    model = _TwoTowers()
    guess = SHAPCallback(num_samples=2, output="student", on_error="raise", stages=("validate",), **FAST)
    with pytest.raises(ValueError, match=r"(?s)`embedding_layer`.*emb \(50x16\), student_emb \(50x4\)"):
        tiny_trainer(tmp_path / "guess", [guess]).validate(model, loader)
    student = SHAPCallback(num_samples=2, output="student", embedding_layer="student_emb", name="shap_student",
                           on_error="raise", stages=("validate",), **FAST)
    teacher = SHAPCallback(num_samples=2, output="teacher", embedding_layer="emb", name="shap_teacher",
                           on_error="raise", stages=("validate",), **FAST)
    tiny_trainer(tmp_path / "named", [student, teacher]).validate(model, loader)
    tags = read_events(tmp_path / "named")["scalars"]
    assert {"xai/shap_student/completeness/mean", "xai/shap_teacher/completeness/mean"} <= set(tags)
    for name in ("shap_student", "shap_teacher"):
        npz = np.load(next((tmp_path / "named").rglob(f"{name}/*/shap_values.npz")))
        assert np.abs(npz["input_ids"]).sum() > 0  # explained at the embedding that feeds this head
        np.testing.assert_allclose(npz["input_ids"].sum(1), npz["outputs"] - npz["base_values"], atol=0.05)
    assert student.state_key != teacher.state_key
    with pytest.raises(ValueError, match="`name`"):
        SHAPCallback(name="a/b")
