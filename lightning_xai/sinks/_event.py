"""Where and when an explanation happened, and the file-name form of artifact names."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Event", "safe_name"]


@dataclass
class Event:
    """Where and when an explanation happened.

    Example:
        >>> Event("gradcam", "validate", epoch=2, global_step=40).folder
        'validate-epoch=2-step=40'
    """

    callback: str
    stage: str
    epoch: int
    global_step: int
    model_hash: str = ""
    ckpt_path: str | None = None

    @property
    def folder(self) -> str:
        return f"{self.stage}-epoch={self.epoch}-step={self.global_step}"


def safe_name(name: str) -> str:
    """``name`` with every character a file name should not hold replaced by ``_``.

    Example:
        >>> safe_name("gradcam++/layer 4")
        'gradcam++_layer_4'
    """
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name)
