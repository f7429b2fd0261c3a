"""PNG encoding of the quickstart's figures: Pillow (what matplotlib's ``savefig`` uses) against ours.

    python benchmarks/png_encode.py [--repeats 5] [--quick]

The drawing process encodes every figure of every epoch (34 PNGs in a 5-epoch quickstart fit with all four
callbacks). Pillow at zlib level 1 tries PNG's five row filters on every row and keeps the best;
:func:`lightning_xai.render._utils.encode_png` filters every row with "Up" in one numpy subtraction and deflates at
level 1. Each figure of one quickstart epoch (benchmarks/figures.py records them) is drawn once; its pixels are
encoded both ways ``--repeats`` times, the fastest kept; sizes and a check that both decode to the same pixels
are reported.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.figures import record  # noqa: E402


def pillow(pixels: np.ndarray, dpi: int) -> bytes:
    from PIL import Image

    if bool((pixels[..., 3] == 255).all()):
        pixels = pixels[..., :3]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="png", compress_level=1, dpi=(dpi, dpi))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="64 training images, 1 repeat: a smoke run")
    args = parser.parse_args()
    import logging
    import warnings

    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from lightning_xai.render._utils import encode_png

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    repeats = 1 if args.quick else args.repeats
    print(f"PNG encoding of the quickstart's figures, fastest of {repeats}")
    print("| figure | size px | Pillow ms | KiB | ours ms | KiB | same pixels |")
    print("|---|---|---|---|---|---|---|")
    sums = [0.0, 0.0]
    for name, builder, dpi in record(2, 64 if args.quick else 256):
        fig = builder()
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        fig.set_dpi(dpi)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())
        row = []
        for i, encode in enumerate((pillow, encode_png)):
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                png = encode(pixels, dpi)
                best = min(best, time.perf_counter() - start)
            sums[i] += best
            row.append((best, png))
        same = np.array_equal(*(np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")) for _, png in row))
        (t0, p0), (t1, p1) = row
        print(f"| {Path(name).name} | {pixels.shape[1]}x{pixels.shape[0]} | {1000 * t0:.1f} | {len(p0) / 1024:.0f} | "
              f"{1000 * t1:.1f} | {len(p1) / 1024:.0f} | {same} |")
    print(f"one epoch's figures: Pillow {1000 * sums[0]:.0f} ms, ours {1000 * sums[1]:.0f} ms "
          f"({sums[0] / sums[1]:.1f}x)")


if __name__ == "__main__":
    main()
