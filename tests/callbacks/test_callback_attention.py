"""AttentionCallback end to end with a real Trainer: TensorBoard tags read back, the npz artifacts' shapes, the model's
attention implementation untouched, Swin refused at setup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai import AttentionCallback
from lightning_xai.sinks import read_manifest
from tests.helpers import TINY_HF, Tokens, read_events, seeded, tiny_trainer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Classifier(LightningModule):
    """A Hugging Face backbone wrapped as users write it: forward gives logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs).logits

    def training_step(self, batch, batch_idx):
        if isinstance(batch, dict):
            logits = self(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return nn.functional.cross_entropy(logits, batch["labels"])
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _arrays(tmp_path: Path, method: str) -> dict[str, np.ndarray]:
    record = [r for m in tmp_path.rglob("manifest.jsonl") for r in read_manifest(m) if r["method"] == method][-1]
    root = next(tmp_path.rglob("manifest.jsonl")).parent
    path = next(f for f in record["files"] if f.endswith(".npz"))
    with np.load(root / path) as z:
        return {k: z[k] for k in z.files}


def test_vision_transformer_fit_logs_every_method(tmp_path):
    with seeded(0):
        model = _Classifier(transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=32, patch_size=8, num_labels=3, **TINY_HF)))
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                                    torch.arange(8) % 3), batch_size=4)
    cb = AttentionCallback(num_samples=2, on_error="raise")
    tiny_trainer(tmp_path, [cb], limit_train_batches=1).fit(model, data, data)
    ev = read_events(tmp_path)
    assert {"xai/attention/attention/input", "xai/attention/attention/heads", "xai/attention/rollout/input",
            "xai/attention/grad_rollout/input"} <= set(ev["images"])
    assert "xai/attention/agreement/rollout_vs_grad_rollout" in ev["scalars"]
    raw = _arrays(tmp_path, "attention")
    assert raw["scores"].shape == (2, 4, 4) and raw["maps"].shape == (2, 32, 32)
    assert raw["raw"].shape == (1, 2, 2, 17, 17) and raw["head_scores"].shape == (1, 2, 2, 4, 4)
    assert _arrays(tmp_path, "grad_rollout")["scores"].shape == (2, 4, 4)
    assert model.net.config._attn_implementation == "sdpa"


def test_text_transformer_heads_figure_and_token_scores(tmp_path):
    with seeded(0):
        model = _Classifier(transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=50, num_labels=2, **TINY_HF)))
    data = DataLoader(Tokens(8), batch_size=4)
    cb = AttentionCallback(num_samples=2, methods=("attention", "grad_rollout"), on_error="raise")
    tiny_trainer(tmp_path, [cb], limit_train_batches=1).fit(model, data, data)
    ev = read_events(tmp_path)
    assert {"xai/attention/attention/heads", "xai/attention/grad_rollout/input_ids"} <= set(ev["images"])
    arrays = _arrays(tmp_path, "grad_rollout")
    assert arrays["scores"].shape == (2, 12) and arrays["maps"].shape == (2, 12)


def test_timesformer_divided_attention_end_to_end(tmp_path):
    with seeded(0):
        model = _Classifier(transformers.TimesformerForVideoClassification(transformers.TimesformerConfig(
            image_size=32, patch_size=8, num_frames=4, num_labels=3, **TINY_HF)))
    clips = torch.randn(4, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (B, T, C, H, W)
    data = DataLoader(TensorDataset(clips, torch.arange(4) % 3), batch_size=2)
    cb = AttentionCallback(num_samples=2, on_error="raise")
    before = model.net.config._attn_implementation
    tiny_trainer(tmp_path, [cb], limit_train_batches=1).fit(model, data, data)
    ev = read_events(tmp_path)
    assert {"xai/attention/rollout/input", "xai/attention/grad_rollout/input"} <= set(ev["images"])
    for method in ("rollout", "grad_rollout"):
        arrays = _arrays(tmp_path, method)
        assert arrays["scores"].shape == (2, 4, 4, 4) and np.isfinite(arrays["scores"]).all()  # frames x grid
    assert _arrays(tmp_path, "attention")["raw"].shape[-1] == 1 + 4 * 16  # CLS + frames x patches
    assert model.net.config._attn_implementation == before


def test_swin_is_refused_at_setup(tmp_path):
    model = _Classifier(transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3)))
    data = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.arange(4) % 3), batch_size=4)
    with pytest.raises(ValueError, match="window attention"):
        tiny_trainer(tmp_path, [AttentionCallback(num_samples=2)]).fit(model, data, data)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="`methods`"):
        AttentionCallback(methods=("rollout", "shap"))
    with pytest.raises(ValueError, match="`discard_ratio`"):
        AttentionCallback(discard_ratio=1.5)
    cb = AttentionCallback(methods=("rollout", "grad_rollout"))
    assert cb.explainers["rollout"].layouts is cb.explainers["grad_rollout"].layouts


def test_agreement_with_the_attribution_callbacks_on_the_same_trainer(tmp_path):
    """Each attention method against each attribution method of the other callbacks, on the attention probe; the
    per-probe values in agreement.json are independent Spearman correlations of |map| of the two npz files."""
    from scipy.stats import spearmanr

    from lightning_xai import AttributionCallback, GradCAMCallback

    with seeded(0):
        model = _Classifier(transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=32, patch_size=8, num_labels=3, **TINY_HF)))
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                                    torch.arange(8) % 3), batch_size=4)
    cb = AttentionCallback(methods=("rollout", "grad_rollout"), num_samples=3, on_error="raise")
    others = AttributionCallback(methods=("integrated_gradients", "saliency"), num_samples=3, on_error="raise")
    cam = GradCAMCallback(num_samples=3, on_error="raise")
    tiny_trainer(tmp_path, [cb, others, cam], limit_train_batches=1).fit(model, data, data)
    scalars = set(read_events(tmp_path)["scalars"])
    for a in ("rollout", "grad_rollout"):
        for b in ("integrated_gradients", "saliency", "gradcam"):
            assert f"xai/attention/agreement/{a}_vs_{b}" in scalars, (a, b)
    folder = next(p for p in tmp_path.rglob("agreement.json") if "attention" in str(p)).parent
    import json
    pairs = json.loads((folder / "agreement.json").read_text())["pairs"]
    rollout = _arrays(tmp_path, "rollout")["maps"]
    saliency = np.load(next(tmp_path.rglob("attribution_saliency.npz")))["input"].sum(1)
    expected = [spearmanr(np.abs(rollout[i]).ravel(), np.abs(saliency[i]).ravel())[0] for i in range(3)]
    assert np.allclose(pairs["rollout_vs_saliency"], expected, atol=1e-5), (pairs["rollout_vs_saliency"], expected)
    quiet = AttentionCallback(methods=("rollout",), num_samples=3, compare=False, on_error="raise")
    tiny_trainer(tmp_path / "quiet", [quiet, AttributionCallback(methods=("saliency",), num_samples=3)],
                 limit_train_batches=1).fit(model, data, data)
    assert not any("agreement" in t for t in read_events(tmp_path / "quiet")["scalars"] if t.startswith("xai/attention"))


def test_faithfulness_of_attention_and_compared_methods_side_by_side(tmp_path):
    from lightning_xai import AttributionCallback
    from lightning_xai.explainers.faithfulness import FaithfulnessCheck

    with seeded(0):
        model = _Classifier(transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=32, patch_size=8, num_labels=3, **TINY_HF)))
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)),
                                    torch.arange(8) % 3), batch_size=4)
    cb = AttentionCallback(methods=("rollout",), num_samples=2, faithfulness=True, faithfulness_steps=4,
                           faithfulness_baseline="zero", on_error="raise")
    saliency = AttributionCallback(methods=("saliency",), num_samples=2, on_error="raise")
    tiny_trainer(tmp_path, [cb, saliency], limit_train_batches=1).fit(model, data, data)
    scalars = set(read_events(tmp_path)["scalars"])
    for method in ("rollout", "saliency"):
        for metric in ("deletion_auc", "insertion_auc"):
            assert f"xai/attention/faithfulness/{method}/{metric}" in scalars, (method, metric)
    # the logged rollout deletion AUC is the functional check's on the npz map
    import json
    folder = next(p for p in tmp_path.rglob("faithfulness.json") if "attention" in str(p)).parent
    logged = json.loads((folder / "faithfulness.json").read_text())["rollout"]
    rollout = torch.as_tensor(_arrays(tmp_path, "rollout")["maps"])
    x = next(iter(data))[0][:2]
    model.eval()
    check = FaithfulnessCheck(steps=4, baseline="zero", seed=0)
    with torch.no_grad():
        target = model(x).argmax(-1)
        ref = check.measure(model, x, {"rollout": rollout}, target, lambda m, r, i: m(r), False)
    key = next(k for k in logged if "deletion" in k and "auc" in k)
    assert np.allclose(logged[key], ref["rollout"]["deletion_auc"].numpy(), atol=1e-5), (logged[key], ref)
