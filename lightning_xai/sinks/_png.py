"""Drawn figures (PNG bytes) to the loggers: TensorBoard takes the bytes as they are, others the decoded pixels."""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

from lightning_xai.sinks._event_crc import fast_event_checksums

__all__ = ["decode_png", "tensorboard_png"]


def tensorboard_png(exp: Any, tag: str, png: bytes, step: int) -> None:
    """Log PNG bytes as a TensorBoard image as they are (no decoding and encoding again), through the writer's
    ``file_writer``; a writer without one (closed, or another implementation) gets the decoded pixels."""
    writer = getattr(exp, "file_writer", None)
    if writer is None or not hasattr(writer, "add_summary") or png[12:16] != b"IHDR":
        exp.add_image(tag, decode_png(png), step, dataformats="HWC")
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    fast_event_checksums()  # TensorBoard's Python checksum of a 300 KiB PNG holds the GIL ~35 ms
    width, height = struct.unpack(">II", png[16:24])
    colorspace = {2: 3, 6: 4, 0: 1, 4: 2}.get(png[25], 4)  # PNG colour type -> channels
    image = Summary.Image(height=height, width=width, colorspace=colorspace, encoded_image_string=png)
    writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)


def decode_png(png: bytes) -> np.ndarray:
    """PNG bytes to an RGB ``uint8`` array ``(H, W, 3)`` (for loggers that take pixels).

    Example:
        >>> from lightning_xai.render import draw_png
        >>> from lightning_xai.render._utils import new_figure
        >>> decode_png(draw_png(new_figure(1.0, 0.5), dpi=20)).shape
        (10, 20, 3)
    """
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
