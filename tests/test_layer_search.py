"""Issue 12: the automatic Grad-CAM layer on real architectures (built from their configs, random weights).

For each: the layer chosen, and a Grad-CAM map through it that is not flat (a pooled or stem layer gives a
constant or meaningless map: that was the silent failure).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import GradCAMCallback
from lightning_xai.callbacks._gradcam_checks import flat_probes
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.functional import cam, find_target_layer, resolve_layer
from lightning_xai.sinks.files import read_manifest

torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def _hf(name: str, config: str, **kw: Any) -> nn.Module:
    return getattr(transformers, name)(getattr(transformers, config)(**kw))


# name -> (model factory, input, expected layer, reshape expected?)
ARCHITECTURES: dict[str, tuple[Any, tuple[int, ...], str, bool]] = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=3), (2, 3, 64, 64), "layer4.1", False),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=3), (2, 3, 64, 64),
                           "features.12.2", False),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(num_classes=3), (2, 3, 64, 64), "features.8.2",
                        False),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(num_classes=3), (2, 3, 64, 64),
                       "trunk_output.block4.block4-5.activation", False),
    "r3d_18": (lambda: torchvision.models.video.r3d_18(num_classes=3), (2, 3, 4, 32, 32), "layer4.1.relu", False),
    "mc3_18": (lambda: torchvision.models.video.mc3_18(num_classes=3), (2, 3, 4, 32, 32), "layer4.1.relu", False),
    "r2plus1d_18": (lambda: torchvision.models.video.r2plus1d_18(num_classes=3), (2, 3, 4, 32, 32),
                    "layer4.1.relu", False),
    "hf_vit": (lambda: _hf("ViTForImageClassification", "ViTConfig", image_size=32, patch_size=8, num_labels=3,
                           **_TINY), (2, 3, 32, 32), "vit.layers.1.layernorm_before", True),
    "hf_deit": (lambda: _hf("DeiTForImageClassificationWithTeacher", "DeiTConfig", image_size=32, patch_size=8,
                            num_labels=3, **_TINY), (2, 3, 32, 32), "deit.layers.1.layernorm_before", True),
    "hf_beit": (lambda: _hf("BeitForImageClassification", "BeitConfig", image_size=32, patch_size=8, num_labels=3,
                            **_TINY), (2, 3, 32, 32), "beit.layers.1.layernorm_before", True),
    "hf_dinov2": (lambda: _hf("Dinov2ForImageClassification", "Dinov2Config", image_size=32, patch_size=8,
                              num_labels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2),
                  (2, 3, 32, 32), "dinov2.encoder.layer.1.norm1", True),
    "hf_clip_vision": (lambda: _hf("CLIPVisionModel", "CLIPVisionConfig", image_size=32, patch_size=8, **_TINY),
                       (2, 3, 32, 32), "encoder.layers.1.layer_norm1", True),
    "hf_convnext": (lambda: _hf("ConvNextForImageClassification", "ConvNextConfig", num_labels=3,
                                hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1]), (2, 3, 64, 64),
                    "convnext.encoder.stages.3.layers.0", False),
    "hf_swin": (lambda: _hf("SwinForImageClassification", "SwinConfig", image_size=32, patch_size=4, embed_dim=16,
                            depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3), (2, 3, 32, 32),
                "swin.encoder.layers.1.blocks.0.layernorm_before", True),
}
if hasattr(transformers, "Dinov2WithRegistersConfig"):
    ARCHITECTURES["hf_dinov2_registers"] = (
        lambda: _hf("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig", image_size=32,
                    patch_size=8, num_labels=3, num_register_tokens=4, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2),
        (2, 3, 32, 32), "dinov2_with_registers.encoder.layer.1.norm1", True)


def _scores(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out.pooler_output


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_layer_chosen_and_a_map_that_is_not_flat(arch):
    make, shape, expected, token_model = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(*shape)

    def fwd(m, image):
        return _scores(m(image))

    name, reshape = find_target_layer(model, (x,), forward_fn=fwd)
    assert name == expected  # today: avgpool (video CNNs), the patch embedding (DINOv2, CLIP)
    assert (reshape is not None) == token_model
    with torch.no_grad():
        target = fwd(model, x).argmax(-1)  # the predicted class: the map Grad-CAM shows by default
    maps = cam(model, (x,), target, resolve_layer(model, name), forward_fn=fwd, reshape_transform=reshape)
    assert maps.shape[-2:] == x.shape[-2:]
    assert flat_probes(maps if maps.dim() == 3 else maps.flatten(1, 2)) == [False, False]


class _ImageText(LightningModule):
    """An image+text classifier (CLIP with its texts in the batch): every input has the batch dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.text = nn.EmbeddingBag(20, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, pixel_values, input_ids):
        image = self.image(pixel_values).mean((2, 3))
        return self.head(image + self.text(input_ids))  # fails when the batches disagree

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["pixel_values"], batch["input_ids"]), batch["labels"])

    def validation_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _pairs(n: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.randn(3, 16, 16, generator=gen), "input_ids": torch.randint(0, 20, (5,),
             generator=gen), "labels": torch.tensor(i % 3)} for i in range(n)]


def _trainer(root, callbacks) -> Trainer:
    return Trainer(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=str(root), callbacks=callbacks,
                   enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                   num_sanity_val_steps=0, limit_train_batches=1)


def test_the_layer_search_cuts_every_input_alike(tmp_path):
    seed_everything(0)
    loader = DataLoader(_pairs(8), batch_size=4)
    cb = GradCAMCallback(num_samples=4, on_error="raise")  # today: "Sizes of tensors must match" in forward
    _trainer(tmp_path, [cb]).fit(_ImageText(), loader, loader)
    (record,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
    assert record["layer"] == "image.3" and record["scalars"]["xai/gradcam/gradcam/flat"] == 0.0


def test_a_flat_layer_is_said_and_logged(tmp_path):
    from lightning_xai.demo import ShapesCNN

    seed_everything(0)
    loader = DataLoader(SyntheticShapes(16, image_size=16, seed=1), batch_size=8)
    cb = GradCAMCallback(num_samples=4, target_layer="pool", on_error="raise")  # after global pooling
    with pytest.warns(RuntimeWarning, match=r"layer 'pool' are flat.*target_layer=.*features"):
        _trainer(tmp_path, [cb]).fit(ShapesCNN(width=4), loader, loader)
    (record,) = read_manifest(tmp_path / "xai" / "manifest.jsonl")
    assert record["scalars"]["xai/gradcam/gradcam/flat"] == 1.0 and record["layer"] == "pool"
