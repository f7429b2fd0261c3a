"""``layers="auto"``: one layer per block, found by structure like the Grad-CAM layer search (no forward needed).

Pure torch. Transformers (ViT, BERT, Swin, DeiT, CLIP, Whisper, ...): every block of every attention stack, the
containers whose children each hold an attention module and a norm (the search's ``_stacks``), e.g.
``bert.encoder.layer.0`` ... ``bert.encoder.layer.11``. Convolutional networks (ResNet, ConvNeXt, RegNet, ...): the
output of every stage, the innermost ``Sequential``/``ModuleList`` whose children are all blocks holding a
convolution (ResNet: ``layer1`` ... ``layer4``; torchvision's ConvNeXt: ``features.1``, ``features.3``, ...).
"""

from __future__ import annotations

from torch import nn

from lightning_xai._checks import expected
from lightning_xai.functional._layers import suggest_layers
from lightning_xai.functional._layers_tokens import _stacks

__all__ = ["probe_layers"]


def _is_stage(container: nn.Module) -> bool:
    if not isinstance(container, (nn.Sequential, nn.ModuleList)) or len(container) == 0:
        return False
    return all(len(block._modules) > 0 and any(isinstance(m, nn.modules.conv._ConvNd) for m in block.modules())
               for block in container.children())


def _stages(model: nn.Module) -> list[str]:
    found = [name for name, module in model.named_modules() if _is_stage(module)]
    return [name for name in found if not any(other != name and other.startswith(f"{name}.") for other in found)]


def probe_layers(model: nn.Module) -> list[str]:
    """The layers ``layers="auto"`` probes: every transformer block, else every convolutional stage.

    Raises:
        ValueError: If the model has neither; the message names ``layers`` and lists candidate names.

    Example:
        >>> import torchvision
        >>> probe_layers(torchvision.models.resnet18())
        ['layer1', 'layer2', 'layer3', 'layer4']
    """
    blocks = [name for _, stack in _stacks(model) for name, _ in stack]
    if blocks:
        return blocks
    stages = _stages(model)
    if stages == [""]:  # the model itself is the one stage (a Sequential of blocks): each block is a layer
        return [name for name, _ in model.named_children()]
    if stages:
        return stages
    raise ValueError(
        expected("layers", f"names of layers to probe: 'auto' finds transformer blocks and convolutional stages, "
                 f"and {type(model).__name__} has neither", "auto")
        + f" Pass `layers=` with module names, e.g. some of {suggest_layers(model)}.")
