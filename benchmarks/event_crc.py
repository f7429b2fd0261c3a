"""TensorBoard's event checksum: its pure-Python CRC-32C against google-crc32c's, on the quickstart's figures.

    python benchmarks/event_crc.py [--images 34] [--kib 300] [--repeats 3]

The quickstart fit with all four callbacks logs 34 PNGs of ~100-400 KiB to TensorBoard (benchmarks/overhead.py).
Without TensorFlow, TensorBoard checksums every event record in a Python loop
(``tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c``), in its writer thread, holding the GIL
the training loop needs. This writes ``--images`` image events of ``--kib`` KiB (random bytes: a PNG's entropy)
through ``torch.utils.tensorboard.SummaryWriter`` -- what Lightning's TensorBoardLogger uses -- once with
TensorBoard's checksum and once with :mod:`lightning_xai.sinks._event_crc`'s, and reports the seconds from the first
``add_summary`` to the end of ``flush`` (the writer thread's work), fastest of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tensorboard.compat.proto.summary_pb2 import Summary  # noqa: E402
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # noqa: E402
from tensorboard.summary.writer import record_writer  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from lightning_xai.sinks._event_crc import masked_crc32c  # noqa: E402


def write(images: list[bytes]) -> float:
    """Seconds to log ``images`` as image events and flush them."""
    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(folder)
        start = time.perf_counter()
        for step, data in enumerate(images):
            image = Summary.Image(height=600, width=1000, colorspace=4, encoded_image_string=data)
            writer.file_writer.add_summary(Summary(value=[Summary.Value(tag="xai/figure", image=image)]), step)
        writer.flush()
        seconds = time.perf_counter() - start
        writer.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=34)
    parser.add_argument("--kib", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = [os.urandom(args.kib * 1024) for _ in range(args.images)]
    timings = {}
    checksums = (("tensorboard (Python)", pywrap_tensorflow.masked_crc32c), ("google-crc32c (C)", masked_crc32c))
    for name, checksum in checksums:
        record_writer.masked_crc32c = checksum
        timings[name] = min(write(images) for _ in range(args.repeats))
    record_writer.masked_crc32c = pywrap_tensorflow.masked_crc32c
    print(f"{args.images} image events of {args.kib} KiB through SummaryWriter, fastest of {args.repeats}")
    print("| checksum | seconds | ms per image |")
    print("|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.3f} | {1000 * seconds / args.images:.1f} |")
    python, fast = timings.values()
    print(f"ratio Python / C: {python / fast:.0f}x")


if __name__ == "__main__":
    main()
