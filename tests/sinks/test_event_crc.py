"""TensorBoard's event checksums in C: the records stay valid for TensorBoard's own (pure-Python) checksum, the image
reads back, and a checksum that is not TensorBoard's stub is left alone."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

from lightning_xai.sinks import _event_crc
from lightning_xai.sinks._event_crc import fast_event_checksums, masked_crc32c
from lightning_xai.sinks._png import tensorboard_png


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 8, 9, 255, 4096, 300_001])
def test_masked_crc32c_equals_tensorboards_own(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


def _records(path: Path) -> list[bytes]:
    """Every record of a TFRecord file, each checked with TensorBoard's pure-Python checksum."""
    raw, out, at = path.read_bytes(), [], 0
    while at < len(raw):
        header = raw[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", raw[at + 8:at + 12])[0] == pywrap_tensorflow.masked_crc32c(header)
        data = raw[at + 12:at + 12 + length]
        assert struct.unpack("<I", raw[at + 12 + length:at + 16 + length])[0] == pywrap_tensorflow.masked_crc32c(data)
        out.append(data)
        at += 16 + length
    return out


def test_images_logged_through_the_fast_checksum_are_valid_records(tmp_path: Path) -> None:
    from lightning_xai.render import draw_png
    from lightning_xai.render._utils import new_figure

    png = draw_png(new_figure(2.0, 1.0), dpi=50)
    writer = SummaryWriter(str(tmp_path))
    tensorboard_png(writer, "xai/figure", png, 3)
    writer.close()
    assert record_writer.masked_crc32c is masked_crc32c
    (events,) = list(tmp_path.glob("events.out.tfevents.*"))
    records = _records(events)
    assert any(png in r for r in records)  # the PNG's bytes as they were drawn

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    (image,) = acc.Images("xai/figure")
    assert image.step == 3 and image.encoded_image_string == png


def test_a_checksum_that_is_not_tensorboards_stub_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def theirs(data: bytes) -> int:  # TensorFlow's, or a user's own
        return pywrap_tensorflow.masked_crc32c(data)

    monkeypatch.setattr(record_writer, "masked_crc32c", theirs)
    assert _event_crc._switch() is False
    assert record_writer.masked_crc32c is theirs


def test_switch_is_idempotent() -> None:
    assert fast_event_checksums() is True and fast_event_checksums() is True
    assert record_writer.masked_crc32c is masked_crc32c
