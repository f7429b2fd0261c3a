"""CAM engines: ring (a) against pytorch_grad_cam, ring (c) hygiene, and target-layer resolution."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import Tensor, nn

from lightning_xai.functional import (
    CAM_METHODS,
    GRADIENT_CAM_METHODS,
    REFERENCE_CAM_METHODS,
    cam,
    explanation_mode,
    find_target_layer,
    grad_cam,
    reference_cam,
    resolve_layer,
    swin_reshape_transform,
    vit_reshape_transform,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------- models
def tiny_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    ).eval()


def tiny_vit() -> torchvision.models.VisionTransformer:
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    )
    nn.init.normal_(vit.heads.head.weight, std=0.1)  # torchvision zero-initialises the head: no gradient
    return vit.eval()


class VideoCNN(nn.Module):
    """3-D conv video classifier on (B, C, T, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(4, 6, 3, stride=(1, 2, 2), padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


class FrameCNN(nn.Module):
    """A 2-D backbone applied per frame of (B, T, C, H, W), frame features averaged."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1)
        )
        self.head = nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        features = self.backbone(x.flatten(0, 1)).relu().mean(dim=(2, 3))
        return self.head(features.reshape(b, t, -1).mean(dim=1))


class TwoInputCNN(nn.Module):
    """An image plus a per-sample bias vector."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = tiny_cnn()

    def forward(self, image: Tensor, bias: Tensor) -> Tensor:
        return self.cnn(image) + bias


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Observable model state, read without the guard."""
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [
            tuple(len(getattr(m, d)) for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"))
            for m in model.modules()
        ],
        "modules": [type(m).__name__ for m in model.modules()],
    }


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in ("training", "requires_grad", "hooks", "modules"):
        assert before[key] == after[key], key
    for a, b in zip(before["grad"], after["grad"]):
        assert (a is None and b is None) or torch.equal(a, b)


def corr(a: Tensor, b: Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


# ------------------------------------------------------------------------- ring (a): pytorch_grad_cam
@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=5).eval()


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return tiny_vit()


@pytest.mark.parametrize("method", GRADIENT_CAM_METHODS)
def test_tiny_cnn_matches_pytorch_grad_cam(method: str) -> None:
    net = tiny_cnn()
    x, target = torch.randn(3, 3, 24, 24), torch.tensor([0, 3, 4])
    ours = grad_cam(net, x, target, net[3], method=method)
    ref = reference_cam(net, x, target, net[3], method=method)
    assert ours.shape == (3, 24, 24) and ours.dtype == torch.float32
    assert (ours - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("method", GRADIENT_CAM_METHODS)
def test_resnet18_matches_pytorch_grad_cam(resnet: nn.Module, method: str) -> None:
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    layer = resolve_layer(resnet, "layer4.1")
    ours = grad_cam(resnet, x, target, layer, method=method)
    ref = reference_cam(resnet, x, target, layer, method=method)
    assert ours.shape == (2, 64, 64)
    assert (ours - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("method", GRADIENT_CAM_METHODS)
def test_vit_matches_pytorch_grad_cam(vit: nn.Module, method: str) -> None:
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([2, 0])
    name, reshape = find_target_layer(vit, x)
    layer = resolve_layer(vit, name)
    ours = grad_cam(vit, x, target, layer, method=method, reshape_transform=reshape)
    ref = reference_cam(vit, x, target, layer, method=method, reshape_transform=reshape)
    assert ours.shape == (2, 32, 32) and ours.amax() > 0.99
    assert (ours - ref).abs().max() <= 1e-5


class FusedWhenNoGrad(nn.Module):
    """Skips its submodule when autograd is off, like fused inference paths (nn.TransformerEncoder's)."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn = tiny_cnn()
        self.forwards = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forwards += 1
        conv = self.cnn[2]
        if torch.is_grad_enabled():
            return self.cnn(x)
        features = torch.conv2d(self.cnn[1](self.cnn[0](x)), conv.weight, conv.bias, stride=2, padding=1)
        return self.cnn[4:](self.cnn[3](features))


def test_layer_skipped_by_fused_no_grad_path() -> None:
    model = FusedWhenNoGrad().eval()
    x, target = torch.randn(2, 3, 16, 16), torch.tensor([1, 3])
    ours = grad_cam(model, x, target, model.cnn[2])
    assert model.forwards == 2  # the no-grad run skipped `cnn.2`, the second run recorded it
    ref = reference_cam(model, x, target, model.cnn[2], method="gradcam")
    assert (ours - ref).abs().max() <= 1e-5


def test_callable_target_matches_pytorch_grad_cam() -> None:
    net = tiny_cnn()
    x = torch.randn(2, 3, 16, 16)

    def score(logits: Tensor) -> Tensor:
        return logits.log_softmax(dim=-1)[:, 2] - logits[:, 0]

    ours = grad_cam(net, x, score, net[3], method="gradcam++")
    ref = reference_cam(net, x, score, net[3], method="gradcam++")
    assert (ours - ref).abs().max() <= 1e-5


def test_int_target_and_multi_input_forward_fn() -> None:
    model = TwoInputCNN()
    image, bias = torch.randn(2, 3, 16, 16), torch.randn(2, 5)
    ours = grad_cam(model, (image, bias), 2, model.cnn[3], forward_fn=lambda m, i, b: m(i, b))
    single = grad_cam(model.cnn, image, torch.tensor([2, 2]), model.cnn[3])
    ref = reference_cam(model, (image, bias), 2, model.cnn[3], method="gradcam")
    assert torch.allclose(ours, single, atol=1e-6) and (ours - ref).abs().max() <= 1e-5
    perturbed = reference_cam(model, (image, bias), 2, model.cnn[3], method="scorecam")
    assert perturbed.shape == (2, 16, 16) and torch.isfinite(perturbed).all()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_video_3d_conv_correlates_with_pytorch_grad_cam(method: str) -> None:
    torch.manual_seed(0)
    net = VideoCNN().eval()
    x, target = torch.randn(2, 3, 4, 16, 16), torch.tensor([1, 2])
    ours = grad_cam(net, x, target, net.features[3], method=method)
    ref = reference_cam(net, x, target, net.features[3], method=method)
    assert ours.shape == ref.shape == (2, 4, 16, 16)
    assert min(corr(ours[i], ref[i]) for i in range(2)) >= 0.95


def test_clips_in_frames_first_layout_get_maps_per_frame() -> None:
    torch.manual_seed(0)
    net = VideoCNN().eval()
    x = torch.randn(2, 5, 3, 16, 16)  # (B, T, C, H, W), the model permutes: VideoMAE's layout

    def fwd(m: nn.Module, clip: Tensor) -> Tensor:
        return m(clip.transpose(1, 2))

    maps = grad_cam(net, x, torch.tensor([1, 2]), net.features[3], forward_fn=fwd)
    assert maps.shape == (2, 5, 16, 16)  # today: (2, 3, 16, 16), the channels taken for frames
    same = grad_cam(net, x.transpose(1, 2), torch.tensor([1, 2]), net.features[3])
    assert torch.allclose(maps, same, atol=1e-6)


def test_frame_flattened_video() -> None:
    torch.manual_seed(0)
    net = FrameCNN().eval()
    x, target = torch.randn(2, 3, 3, 16, 16), torch.tensor([0, 4])  # (B, T, C, H, W)
    ours = grad_cam(net, x, target, net.backbone[2])
    assert ours.shape == (2, 3, 16, 16)

    # pytorch_grad_cam sees the same video as (B, C, T, H, W), the per-frame maps folded by a reshape.
    class ChannelsFirst(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, v: Tensor) -> Tensor:
            return self.inner(v.transpose(1, 2))

    def fold(a: Tensor) -> Tensor:
        return a.reshape(2, 3, *a.shape[1:]).transpose(1, 2)

    ref = reference_cam(ChannelsFirst(net), x.transpose(1, 2), target, net.backbone[2], method="gradcam",
                        reshape_transform=fold)
    assert ref.shape == (2, 3, 16, 16)
    assert min(corr(ours[i], ref[i]) for i in range(2)) >= 0.95


@pytest.mark.parametrize("method", list(REFERENCE_CAM_METHODS))
def test_reference_methods_run_through_cam(method: str) -> None:
    net = tiny_cnn()
    net.train()
    before = snapshot(net)
    maps = cam(net, torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), net[3], method=method)
    assert maps.shape == (2, 16, 16) and maps.dtype == torch.float32 and torch.isfinite(maps).all()
    assert_same_state(before, snapshot(net))


@pytest.mark.parametrize("method", ["ablationcam", "scorecam", "eigencam"])
def test_reference_methods_on_vit_tokens(vit: nn.Module, method: str) -> None:
    x = torch.randn(2, 3, 32, 32)
    name, reshape = find_target_layer(vit, x)
    layer = resolve_layer(vit, name)
    maps = cam(vit, x, torch.tensor([1, 2]), layer, method=method, reshape_transform=reshape)
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all()


@pytest.mark.parametrize("method", ["fullgrad", "shapleycam"])
def test_reference_methods_without_reshape_support(vit: nn.Module, method: str) -> None:
    name, reshape = find_target_layer(vit, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="`reshape_transform`"):
        cam(vit, torch.randn(1, 3, 32, 32), 0, vit.conv_proj, method=method, reshape_transform=reshape)


def test_method_lists() -> None:
    assert CAM_METHODS[: len(GRADIENT_CAM_METHODS)] == GRADIENT_CAM_METHODS
    assert set(CAM_METHODS) == set(GRADIENT_CAM_METHODS) | set(REFERENCE_CAM_METHODS)
    import pytorch_grad_cam

    assert all(hasattr(pytorch_grad_cam, name) for name in REFERENCE_CAM_METHODS.values())


# ----------------------------------------------------------------------------------- ring (c): hygiene
@pytest.mark.parametrize("engine", [grad_cam, reference_cam])
def test_model_left_as_found(engine: Any) -> None:
    net = tiny_cnn()
    net.train()
    net[0].weight.requires_grad_(False)
    net[6].weight.grad = torch.ones_like(net[6].weight)
    net[2].register_forward_hook(lambda *a: None)
    before = snapshot(net)
    engine(net, torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), net[3], method="gradcam")
    assert_same_state(before, snapshot(net))


def test_no_hooks_left_after_an_error() -> None:
    net = tiny_cnn()
    before = snapshot(net)

    def broken(logits: Tensor) -> Tensor:
        raise RuntimeError("boom")

    for engine in (grad_cam, reference_cam):
        with pytest.raises(RuntimeError, match="boom"):
            engine(net, torch.randn(1, 3, 16, 16), broken, net[3], method="gradcam")
        assert_same_state(before, snapshot(net))


def test_frozen_parameters() -> None:
    net = tiny_cnn()
    x, target = torch.randn(2, 3, 16, 16), torch.tensor([3, 1])
    expected_maps = grad_cam(net, x, target, net[3], method="hirescam")
    net.requires_grad_(False)
    before = snapshot(net)
    assert torch.allclose(grad_cam(net, x, target, net[3], method="hirescam"), expected_maps, atol=1e-6)
    assert_same_state(before, snapshot(net))


def test_frozen_layer_followed_by_inplace_op() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).requires_grad_(False)
    maps = grad_cam(net, torch.randn(2, 3, 10, 10), torch.tensor([0, 1]), net[0], method="layercam")
    assert maps.shape == (2, 10, 10) and torch.isfinite(maps).all()


def test_inference_mode_with_explanation_mode(resnet: nn.Module) -> None:
    net = tiny_cnn()
    target = torch.tensor([0, 1])
    with torch.inference_mode():
        x = torch.randn(2, 3, 16, 16)
        with explanation_mode(net):
            maps = grad_cam(net, x.clone(), target, net[3])
        bare = grad_cam(net, x, target, net[3])  # inference tensors are cloned, inference mode left inside
    assert torch.equal(maps, bare) and maps.amax() > 0.99


# --------------------------------------------------------------------------------------- layer finding
def test_find_target_layer_resnet18(resnet: nn.Module) -> None:
    assert find_target_layer(resnet, torch.randn(2, 3, 64, 64)) == ("layer4.1", None)


def test_find_target_layer_convnext() -> None:
    net = torchvision.models.convnext_tiny(weights=None)
    name, reshape = find_target_layer(net, torch.randn(1, 3, 64, 64))
    assert name.startswith("features.7.") and reshape is None
    maps = grad_cam(net, torch.randn(1, 3, 64, 64), torch.tensor([3]), resolve_layer(net, name))
    assert maps.shape == (1, 64, 64)


def test_find_target_layer_sequential_cnn() -> None:
    assert find_target_layer(tiny_cnn(), torch.randn(1, 3, 16, 16)) == ("3", None)
    inplace = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert find_target_layer(inplace, torch.randn(1, 3, 8, 8)) == ("1", None)


def test_find_target_layer_vit(vit: nn.Module) -> None:
    name, reshape = find_target_layer(vit, torch.randn(1, 3, 32, 32))
    assert name == "encoder.layers.encoder_layer_1.ln_1" and reshape is not None

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = vit

        def forward(self, x: Tensor) -> Tensor:
            return self.backbone(x)

    assert find_target_layer(Wrapper(), torch.randn(1, 3, 32, 32))[0] == "backbone." + name


def test_hugging_face_vit() -> None:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
    )
    model = ViTForImageClassification(config).eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])

    def forward_fn(m: nn.Module, pixels: Tensor) -> Tensor:
        return m(pixel_values=pixels).logits

    name, reshape = find_target_layer(model, x, forward_fn=forward_fn)
    assert name.endswith("layernorm_before") and name.endswith(".1.layernorm_before")
    layer = resolve_layer(model, name)
    ours = cam(model, x, target, layer, forward_fn=forward_fn, reshape_transform=reshape)
    ref = reference_cam(
        model, x, target, layer, method="gradcam", forward_fn=forward_fn, reshape_transform=reshape
    )
    assert ours.shape == (2, 32, 32) and (ours - ref).abs().max() <= 1e-5


def test_hugging_face_deit() -> None:
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    torch.manual_seed(0)
    config = DeiTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3,
    )
    model = DeiTForImageClassificationWithTeacher(config).eval()
    x = torch.randn(1, 3, 32, 32)

    def forward_fn(m: nn.Module, pixels: Tensor) -> Tensor:
        return m(pixel_values=pixels).logits

    name, reshape = find_target_layer(model, x, forward_fn=forward_fn)
    assert name.endswith(".1.layernorm_before")
    assert reshape.keywords == {"num_prefix_tokens": 2, "grid": (4, 4)}  # type: ignore[union-attr]
    maps = grad_cam(model, x, torch.tensor([1]), resolve_layer(model, name), forward_fn=forward_fn,
                    reshape_transform=reshape)
    assert maps.shape == (1, 32, 32) and maps.amax() > 0.99


def test_hugging_face_swin() -> None:
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)
    config = SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=2,
        num_labels=3,
    )
    model = SwinForImageClassification(config).eval()
    x = torch.randn(1, 3, 32, 32)

    def forward_fn(m: nn.Module, pixels: Tensor) -> Tensor:
        return m(pixel_values=pixels).logits

    name, reshape = find_target_layer(model, x, forward_fn=forward_fn)
    assert name == "swin.encoder.layers.1.blocks.0.layernorm_before"  # tokens of the 4 x 4 grid after one merge
    assert reshape.func is vit_reshape_transform and reshape.keywords == {"num_prefix_tokens": 0, "grid": (4, 4)}
    maps = grad_cam(model, x, torch.tensor([1]), resolve_layer(model, name), forward_fn=forward_fn,
                    reshape_transform=reshape)
    assert maps.shape == (1, 32, 32) and torch.isfinite(maps).all()


def test_torchvision_swin() -> None:
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2], num_classes=3
    ).eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    name, reshape = find_target_layer(model, x)
    assert name == "features.3.0.norm1" and reshape is swin_reshape_transform
    layer = resolve_layer(model, name)
    ours = grad_cam(model, x, target, layer, reshape_transform=reshape)
    ref = reference_cam(model, x, target, layer, method="gradcam", reshape_transform=reshape)
    assert ours.shape == (2, 32, 32) and (ours - ref).abs().max() <= 1e-5


def test_reshape_transforms() -> None:
    assert vit_reshape_transform(torch.zeros(2, 18, 4)).shape == (2, 4, 4, 4)  # DeiT: 2 prefix tokens
    assert vit_reshape_transform(torch.zeros(2, 16, 4)).shape == (2, 4, 4, 4)
    tokens = torch.arange(2 * 5 * 3.0).reshape(2, 5, 3)
    assert torch.equal(vit_reshape_transform(tokens, num_prefix_tokens=1)[1, :, 1, 0], tokens[1, 3])
    with pytest.raises(ValueError, match="`reshape_transform`"):
        vit_reshape_transform(torch.zeros(1, 35, 4))  # 25 patches + 10 > 8 prefix tokens
    with pytest.raises(ValueError, match="`reshape_transform`"):
        vit_reshape_transform(torch.zeros(1, 17, 4), num_prefix_tokens=2)
    with pytest.raises(ValueError, match="`reshape_transform`.*set `target_layer=`"):
        swin_reshape_transform(torch.zeros(1, 15, 4))


# ------------------------------------------------------------------------------------------- errors
def test_resolve_layer_indices_and_errors(resnet: nn.Module) -> None:
    assert resolve_layer(resnet, "layer4[-1]") is resnet.layer4[1]
    assert resolve_layer(resnet, "layer4[0].conv1") is resnet.layer4[0].conv1
    with pytest.raises(ValueError) as info:
        resolve_layer(resnet, "layer4.2")
    message = str(info.value)
    assert message.startswith("Expected argument `target_layer` to be the name of a submodule of ResNet")
    assert "'layer4.2'" in message and "Closest names" in message and "layer4.1" in message
    assert "layer4.1.conv2" in message  # a candidate conv layer
    with pytest.raises(TypeError):
        resolve_layer(resnet, 3)  # type: ignore[arg-type]


def test_find_target_layer_mlp_raises() -> None:
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="`target_layer`"):
        find_target_layer(mlp, torch.randn(2, 4))
    assert len(mlp[0]._forward_hooks) == 0


def test_argument_errors() -> None:
    net = tiny_cnn()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="Expected argument `method` to be one of") as info:
        cam(net, x, torch.tensor([0, 1]), net[3], method="nope")
    assert "scorecam" in str(info.value) and "gradcam++" in str(info.value)
    with pytest.raises(ValueError, match="`method`"):
        grad_cam(net, x, torch.tensor([0, 1]), net[3], method="scorecam")
    with pytest.raises(ValueError, match="`target`"):
        grad_cam(net, x, torch.tensor([0, 1, 2]), net[3])
    with pytest.raises(TypeError, match="`target`"):
        grad_cam(net, x, torch.tensor([0.0, 1.0]), net[3])
    with pytest.raises(TypeError, match="`target_layer`"):
        grad_cam(net, x, torch.tensor([0, 1]), "3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`target_layer`"):
        grad_cam(net, x, torch.tensor([0, 1]), nn.ReLU())  # not part of the model
    with pytest.raises(ValueError, match="`target_layer`"):
        grad_cam(net, x, torch.tensor([0, 1]), net[5])  # flattened output: no feature map
    with pytest.raises(ValueError, match=r"`inputs\[0\]`"):
        grad_cam(net, torch.randn(2, 3), torch.tensor([0, 1]), net[3])
