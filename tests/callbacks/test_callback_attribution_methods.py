"""AttributionCallback and AttributionDriftCallback end to end with the real registered attribution methods: a
CNN on images, a token model explained at its embedding, drift of integrated gradients across epochs."""

from __future__ import annotations

import itertools

import numpy as np
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader

from lightning_xai import AttributionCallback, AttributionDriftCallback
from lightning_xai.demo import ShapesCNN
from lightning_xai.sinks.files import read_manifest
from tests.helpers import TextModel, Tokens, read_events, scalar_values, shapes_loaders, tiny_trainer

IMAGE_METHODS = ("integrated_gradients", "saliency", "smoothgrad", "occlusion", "lime")


def test_image_methods_write_arrays_figures_completeness_stability_and_agreement(tmp_path):
    seed_everything(0)
    cb = AttributionCallback(methods=IMAGE_METHODS, num_samples=4, on_error="raise",
                             method_kwargs={"lime": {"n_samples": 64, "n_segments": 16},
                                            "smoothgrad": {"nt_samples": 4}})
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=1)
    trainer.fit(ShapesCNN(width=4), *shapes_loaders(16))
    records = list(read_manifest(next(tmp_path.rglob("manifest.jsonl"))))
    assert [r["method"] for r in records] == [*IMAGE_METHODS, "comparison"]
    folder = next(tmp_path.rglob("attribution_saliency.npz")).parent
    targets = None
    for method in IMAGE_METHODS:
        arrays = np.load(folder / f"attribution_{method}.npz")
        assert arrays["input"].shape == (4, 3, 16, 16), method
        assert np.isfinite(arrays["input"]).all() and np.abs(arrays["input"]).sum() > 0, method
        targets = arrays["targets"] if targets is None else targets
        assert np.array_equal(arrays["targets"], targets), method  # one probe, one target per probe for every method
    assert (np.load(folder / "attribution_saliency.npz")["input"] >= 0).all()  # captum's abs=True
    # lime: one coefficient per superpixel, so every channel of a pixel carries the same value
    lime = np.load(folder / "attribution_lime.npz")["input"]
    assert np.array_equal(lime[:, 0], lime[:, 2])
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    relative = metrics["xai/attribution/integrated_gradients/completeness/relative_median"]
    assert 0 <= relative <= 0.01, relative  # completeness_tol=0.01 by default
    for method in ("smoothgrad", "lime"):
        assert 0 <= metrics[f"xai/attribution/{method}/stability_iou"] <= 1, method
    assert not any(k.startswith(f"xai/attribution/{m}/stability") for k in metrics for m in
                   ("integrated_gradients", "saliency", "occlusion"))
    for a, b in itertools.combinations(IMAGE_METHODS, 2):
        assert -1 <= metrics[f"xai/attribution/agreement/{a}_vs_{b}"] <= 1, (a, b)
    events = read_events(tmp_path)
    assert {"xai/attribution/comparison", *(f"xai/attribution/{m}/input" for m in IMAGE_METHODS)} <= set(
        events["images"])


def test_token_model_is_explained_at_its_embedding(tmp_path):
    seed_everything(0)
    loader = DataLoader(Tokens(16), batch_size=8)
    methods = ("integrated_gradients", "occlusion", "lime", "kernel_shap", "feature_ablation")
    pairs = {"input_ids": [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]]}  # feature_mask: tokens two by two
    cb = AttributionCallback(methods=methods, num_samples=4, embedding_layer="emb", on_error="raise",
                             method_kwargs={"lime": {"n_samples": 64}, "kernel_shap": {"n_samples": 64},
                                            "feature_ablation": {"feature_mask": pairs}})
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=1)
    trainer.fit(TextModel(), loader, loader)
    folder = next(tmp_path.rglob("attribution_lime.npz")).parent
    for method in methods:
        arrays = np.load(folder / f"attribution_{method}.npz")
        values = arrays["input_ids"]
        assert values.shape == (4, 12), method  # one value per token (summed over the embedding dim)
        assert np.abs(values[:, :10]).sum() > 0, method
        if method in ("lime", "kernel_shap", "occlusion"):  # padding is no feature: it never moves the score
            assert np.allclose(values[:, 10:], 0), method
    pair_values = np.load(folder / "attribution_feature_ablation.npz")["input_ids"]
    assert np.allclose(pair_values[:, 0::2], pair_values[:, 1::2])  # one value per pair of tokens
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["xai/attribution/integrated_gradients/completeness/relative_median"] <= 0.01
    assert "xai/attribution/agreement/integrated_gradients_vs_lime" in metrics
    assert "xai/attribution/integrated_gradients/input_ids" in read_events(tmp_path)["images"]


def test_drift_of_integrated_gradients_across_epochs(tmp_path):
    seed_everything(0)
    cb = AttributionDriftCallback(method="integrated_gradients", num_samples=4, on_error="raise",
                                  store=str(tmp_path / "store.sqlite"))
    trainer = tiny_trainer(tmp_path, [cb], max_epochs=3)
    trainer.fit(ShapesCNN(width=4), *shapes_loaders(16))
    events = read_events(tmp_path)
    drift_tags = [t for t in events["scalars"] if t.startswith("xai/drift/")]
    assert drift_tags, sorted(events["scalars"])
    tag = next(t for t in drift_tags if "spearman" in t or "rank" in t or "iou" in t)
    values = [v for _, v in scalar_values(tmp_path, tag)]
    assert len(values) >= 2 and all(np.isfinite(values)), (tag, values)
    assert (tmp_path / "store.sqlite").exists()
    manifest = list(read_manifest(next(tmp_path.rglob("manifest.jsonl"))))
    assert any(r.get("method") == "integrated_gradients" for r in manifest), manifest[:2]
