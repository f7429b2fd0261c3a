"""TensorBoard's event-file checksums computed in C.

TensorBoard without TensorFlow writes each event record with a masked CRC-32C of its bytes, computed by a pure-Python
loop (``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.crc32c``, ~110 ns a byte). Our figures are PNGs of
~300 KiB, so each image event cost ~35 ms of Python holding the GIL in TensorBoard's writer thread -- measured:
~1 s a fit of the quickstart with all four callbacks, taken from the training loop
(``python benchmarks/event_crc.py``). :func:`fast_event_checksums` points TensorBoard's record writer at the same
checksum computed by ``google-crc32c`` (C, the package Google's storage clients use): the bytes written are the
same (checked on a sample before the switch; a test compares whole event files), only faster. It leaves a record
writer alone whose checksum is not TensorBoard's stub (TensorFlow's, or someone else's), and does nothing where
``google-crc32c`` has no C implementation.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["fast_event_checksums", "masked_crc32c"]

_LOCK = threading.Lock()
_STATE: dict[str, bool] = {}


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data`` (the checksum every TensorBoard event record carries), in C.

    Example:
        >>> from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as stub
        >>> masked_crc32c(b"lightning_xai") == stub(b"lightning_xai")
        True
    """
    import google_crc32c

    x = google_crc32c.value(bytes(data))
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fast_event_checksums() -> bool:
    """Make TensorBoard's event writer checksum records with :func:`masked_crc32c`; whether it now does.

    Called before the first image is logged. Idempotent and thread-safe.

    Example:
        >>> from tensorboard.summary.writer import record_writer
        >>> fast_event_checksums(), record_writer.masked_crc32c is masked_crc32c
        (True, True)
    """
    with _LOCK:
        if "done" in _STATE:
            return _STATE["done"]
        _STATE["done"] = _switch()
        return _STATE["done"]


def _switch() -> bool:
    try:
        import google_crc32c
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    current: Any = getattr(record_writer, "masked_crc32c", None)
    if current is masked_crc32c:
        return True
    if current is not pywrap_tensorflow.masked_crc32c or google_crc32c.implementation != "c":
        return False  # someone else's checksum (TensorFlow's), or no faster one here
    sample = bytes(range(256)) * 5 + b"\x89PNG\r\n\x1a\n"
    if any(masked_crc32c(sample[:n]) != current(sample[:n]) for n in (0, 1, 7, 300, len(sample))):
        return False  # never write a record TensorBoard would reject
    record_writer.masked_crc32c = masked_crc32c
    return True
