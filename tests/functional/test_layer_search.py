"""Issue 12: the automatic Grad-CAM layer on real architectures (built from their configs, random weights).

For each: the layer chosen, and a Grad-CAM map through it that is not flat (a pooled or stem layer gives a
constant or meaningless map: that was the silent failure); for the transformers, the token grid (prefix tokens,
downsampling, tubelets, AST's frequency x time patches, Whisper's frames); the search on image+text models, on one
head of two, and its errors and warnings when it is not sure.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai import GradCAMCallback
from lightning_xai.datasets import SyntheticShapes
from lightning_xai.explainers.gradcam import flat_probes
from lightning_xai.functional import cam, find_target_layer, resolve_layer
from lightning_xai.sinks.files import read_manifest
from tests.helpers import TINY_HF

torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")


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
                           **TINY_HF), (2, 3, 32, 32), "vit.layers.1.layernorm_before", True),
    "hf_deit": (lambda: _hf("DeiTForImageClassificationWithTeacher", "DeiTConfig", image_size=32, patch_size=8,
                            num_labels=3, **TINY_HF), (2, 3, 32, 32), "deit.layers.1.layernorm_before", True),
    "hf_beit": (lambda: _hf("BeitForImageClassification", "BeitConfig", image_size=32, patch_size=8, num_labels=3,
                            **TINY_HF), (2, 3, 32, 32), "beit.layers.1.layernorm_before", True),
    "hf_dinov2": (lambda: _hf("Dinov2ForImageClassification", "Dinov2Config", image_size=32, patch_size=8,
                              num_labels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2),
                  (2, 3, 32, 32), "dinov2.encoder.layer.1.norm1", True),
    "hf_clip_vision": (lambda: _hf("CLIPVisionModel", "CLIPVisionConfig", image_size=32, patch_size=8, **TINY_HF),
                       (2, 3, 32, 32), "encoder.layers.1.layer_norm1", True),
    "hf_convnext": (lambda: _hf("ConvNextForImageClassification", "ConvNextConfig", num_labels=3,
                                hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1]), (2, 3, 64, 64),
                    "convnext.encoder.stages.3.layers.0", False),
    "hf_swin": (lambda: _hf("SwinForImageClassification", "SwinConfig", image_size=32, patch_size=4, embed_dim=16,
                            depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=3), (2, 3, 32, 32),
                "swin.encoder.layers.1.blocks.0.layernorm_before", True),
}
ARCHITECTURES.update({
    "tv_vit": (lambda: _tv_vit(), (2, 3, 32, 32), "encoder.layers.encoder_layer_1.ln_1", True),
    "tv_swin_t": (lambda: torchvision.models.swin_t(num_classes=3), (2, 3, 96, 96), "features.7.1.norm1", True),
    "tv_maxvit": (lambda: torchvision.models.maxvit.MaxVit(
        input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[8, 16], block_layers=[1, 1],
        head_dim=4, stochastic_depth_prob=0.0, num_classes=3), (2, 3, 32, 32),
        "blocks.1.layers.0.layers.grid_attention.departition_op", False),  # attention inside conv stages: a map
    "tv_densenet121": (lambda: torchvision.models.densenet121(num_classes=3), (2, 3, 64, 64), "features.norm5", False),
    "tv_convnext_tiny": (lambda: torchvision.models.convnext_tiny(num_classes=3), (2, 3, 64, 64), "features.7.2",
                         False),
    "tv_mvit": (lambda: _tv_mvit(), (2, 3, 4, 32, 32), "blocks.2.norm1", True),
    "hf_mobilevit": (lambda: _hf("MobileViTForImageClassification", "MobileViTConfig", image_size=64,
                                 hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 48],
                                 num_attention_heads=2, num_labels=3, initializer_range=0.3),  # 0.02 -> all zero
                     (2, 3, 64, 64), "mobilevit.conv_1x1_exp.activation", False),  # conv after the transformers
    "hf_ast": (lambda: _hf("ASTForAudioClassification", "ASTConfig", patch_size=16, frequency_stride=10,
                           time_stride=10, max_length=56, num_mel_bins=36, num_labels=3, **TINY_HF), (2, 56, 36),
               "audio_spectrogram_transformer.layers.1.layernorm_before", True),
    "hf_whisper": (lambda: _hf("WhisperForAudioClassification", "WhisperConfig", d_model=32, encoder_layers=2,
                               encoder_attention_heads=2, encoder_ffn_dim=37, decoder_layers=1,
                               decoder_attention_heads=2, decoder_ffn_dim=37, num_mel_bins=20,
                               max_source_positions=16, num_labels=3), (2, 20, 32),
                   "encoder.layers.1.self_attn_layer_norm", True),
    "hf_videomae": (lambda: _hf("VideoMAEForVideoClassification", "VideoMAEConfig", image_size=32, patch_size=8,
                                num_frames=4, tubelet_size=2, num_labels=3, **TINY_HF), (2, 4, 3, 32, 32),
                    "videomae.encoder.layer.1.layernorm_before", True),
    "hf_timesformer": (lambda: _hf("TimesformerForVideoClassification", "TimesformerConfig", image_size=32,
                                   patch_size=8, num_frames=4, num_labels=3, **TINY_HF), (2, 4, 3, 32, 32),
                       "timesformer.encoder.layer.1.layernorm_before", True),
})
SLOW = {"tv_swin3d_t": (lambda: torchvision.models.video.swin3d_t(num_classes=3), (2, 3, 4, 64, 64),
                        "features.6.1.norm1", True)}


def _tv_vit() -> nn.Module:
    model = torchvision.models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3)
    nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision zeroes the head: constant logits, flat maps
    return model


def _tv_mvit() -> nn.Module:
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    def block(heads: int, cin: int, cout: int, stride_q: list[int], stride_kv: list[int]) -> MSBlockConfig:
        return MSBlockConfig(num_heads=heads, input_channels=cin, output_channels=cout, kernel_q=[3, 3, 3],
                             kernel_kv=[3, 3, 3], stride_q=stride_q, stride_kv=stride_kv)

    blocks = [block(1, 16, 16, [1, 1, 1], [1, 2, 2]), block(2, 16, 32, [1, 2, 2], [1, 1, 1]),
              block(2, 32, 32, [1, 1, 1], [1, 1, 1])]  # mvit_v2_s's layout, 3 blocks, 32² x 4 frames
    return MViT(spatial_size=(32, 32), temporal_size=4, block_setting=blocks, residual_pool=True,
                residual_with_cls_embed=False, rel_pos_embed=True, proj_after_attn=True, num_classes=3)


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


@pytest.mark.parametrize("arch", [*sorted(ARCHITECTURES), *(pytest.param(a, marks=pytest.mark.slow) for a in SLOW)])
def test_the_layer_chosen_and_a_map_that_is_not_flat(arch):
    make, shape, expected, token_model = {**ARCHITECTURES, **SLOW}[arch]
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


# ------------------------------------------------------------------------------ token grids (issue 12: 4, 5)
GRIDS = {  # the reshape chosen: its function and keywords
    "hf_ast": ("token_reshape_transform", {"grid": (3, 5), "num_prefix_tokens": 2, "axes": (1, 0)}),  # f x t patches
    "hf_whisper": ("vit_reshape_transform", {"num_prefix_tokens": 0, "grid": (1, 16)}),  # frames after stride 2
    "hf_videomae": ("video_reshape_transform", {"grid": (2, 4, 4), "num_prefix_tokens": 0}),  # tubelets of 2 frames
    "tv_mvit": ("video_reshape_transform", {"grid": (2, 4, 4), "num_prefix_tokens": 1}),  # CLS, pooled 8 -> 4
    "hf_timesformer": ("vit_reshape_transform", {"num_prefix_tokens": 1, "grid": (4, 4)}),  # per frame
    "hf_swin": ("vit_reshape_transform", {"num_prefix_tokens": 0, "grid": (4, 4)}),  # 8 x 8 merged once
    "hf_dinov2_registers": ("vit_reshape_transform", {"num_prefix_tokens": 5, "grid": (4, 4)}),  # CLS + 4 registers
}


@pytest.mark.parametrize("arch", sorted(a for a in GRIDS if a in ARCHITECTURES))
def test_the_token_grid_of_each_transformer(arch):
    make, shape, _, _ = ARCHITECTURES[arch]
    torch.manual_seed(0)
    _, reshape = find_target_layer(make().eval(), (torch.randn(*shape),), forward_fn=lambda m, x: _scores(m(x)))
    assert (reshape.func.__name__, reshape.keywords) == GRIDS[arch]


def test_clip_with_its_texts_explains_the_vision_tower():
    torch.manual_seed(0)
    text = dict(TINY_HF, vocab_size=50, max_position_embeddings=16)
    model = _hf("CLIPModel", "CLIPConfig", text_config=text, vision_config=dict(TINY_HF, image_size=32, patch_size=8),
                projection_dim=16).eval()
    ids, x = torch.randint(0, 50, (2, 7)), torch.randn(2, 3, 32, 32)

    def fwd(m, image):
        return m(input_ids=ids[: image.shape[0]], pixel_values=image).logits_per_image

    name, reshape = find_target_layer(model, (x,), forward_fn=fwd)
    assert name == "vision_model.encoder.layers.1.layer_norm1" and reshape.keywords["num_prefix_tokens"] == 1
    maps = cam(model, (x,), torch.tensor([0, 1]), resolve_layer(model, name), forward_fn=fwd,
               reshape_transform=reshape)
    assert flat_probes(maps) == [False, False]


def _tower(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                         nn.Linear(width, 3))


class _TwoTowers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.teacher, self.student = _tower(8), _tower(4)

    def forward(self, x):
        return {"teacher": self.teacher(x), "student": self.student(x)}


def test_only_layers_the_explained_head_depends_on(recwarn):
    model, x = _TwoTowers(), torch.randn(2, 3, 8, 8)
    assert find_target_layer(model, x, forward_fn=lambda m, v: m(v)["teacher"])[0] == "teacher.1"  # today: student
    assert find_target_layer(model, x, forward_fn=lambda m, v: m(v)["student"])[0] == "student.1"
    assert not [w for w in recwarn if "not sure" in str(w.message)]


def test_two_towers_feeding_one_output_are_said():
    with pytest.warns(UserWarning, match=r"not sure: 'student.1'.*'teacher.1'.*`target_layer=`"):
        find_target_layer(_TwoTowers(), torch.randn(2, 3, 8, 8), forward_fn=lambda m, v: sum(m(v).values()))


def test_only_pooled_maps_is_an_error_naming_target_layer():
    net = nn.Sequential(nn.Conv2d(3, 4, 8), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))  # 8x8 -> 1x1
    with pytest.raises(ValueError, match=r"`target_layer`.*spatial extent.*Pass `target_layer=`.*'0'"):
        find_target_layer(net, torch.randn(1, 3, 8, 8))


class _LinearPatches(nn.Module):
    """A transformer over 36 tokens of a 32 x 96 image: no patch grid fits (32 x 96 has 3, 12, 27, 48 cells)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * 32 * 96 // 36, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x.flatten(1).reshape(x.shape[0], 36, -1))).mean(1))


def test_tokens_without_a_grid_are_an_error_naming_the_norm():
    with pytest.raises(ValueError, match=r"`target_layer`.*input's grid.*`reshape_transform=`.*encoder.layers.1.norm1"):
        find_target_layer(_LinearPatches(), torch.randn(1, 3, 32, 96))


def test_reshape_errors_name_what_to_set():
    from lightning_xai.functional import token_reshape_transform, vit_reshape_transform

    with pytest.raises(ValueError, match=r"`reshape_transform`.*`target_layer=`") as info:
        vit_reshape_transform(torch.zeros(1, 32, 8), num_prefix_tokens=0)  # VideoMAE's 2 x 4 x 4 tubelets
    assert "num_prefix_tokens`" not in str(info.value)  # today: an internal argument name
    tokens = torch.arange(2 + 6.0).reshape(1, 8, 1)  # AST: 2 prefix tokens, then 2 (frequency) x 3 (time) patches
    out = token_reshape_transform(tokens, grid=(2, 3), num_prefix_tokens=2, axes=(1, 0))
    assert out.shape == (1, 1, 3, 2) and out[0, 0, :, 1].tolist() == [5.0, 6.0, 7.0]  # time runs down, frequency 1
