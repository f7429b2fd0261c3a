"""Reading a model and its output: the device it runs on, the logits class indices pick from. Pure torch.

Shared by the SHAP engines (:mod:`lightning_xai.functional.shap`) and the faithfulness curves
(:mod:`lightning_xai.functional.faithfulness`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__: list[str] = []


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else fallback


def logits_of(output: Any) -> Any:
    """The tensor class indices pick from: the output, its ``.logits`` (Hugging Face), or its first item."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return output
