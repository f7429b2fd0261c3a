"""LIME speed and stability: lightning_xai's pure-torch LIME against captum's Lime wrapped with the same feature
mask, and the ``lime`` package's ``LimeImageExplainer``.

    python benchmarks/attribution_lime.py [--samples 1000] [--segments 50] [--repeats 3] [--threads 2]

One 32x32 RGB image, a small randomly initialised CNN, ``n_segments`` SLIC superpixels, ``--samples`` perturbations:

* ours: ``lightning_xai.functional.attribution.lime`` (sampling, batched forwards of ``max_batch=128`` rows, the
  cosine kernel and the weighted Lasso fitted in torch);
* captum: ``captum.attr.Lime`` (its defaults: Lasso(alpha=0.01) through sklearn) with the same superpixels as
  ``feature_mask``, ``perturbations_per_eval=128``;
* lime: ``lime.lime_image.LimeImageExplainer().explain_instance`` with the same superpixels as its segmentation,
  ``num_samples=--samples``, ``batch_size=128``, its classifier fed NCHW-contiguous batches like the others
  (needs ``pip install lime``; skipped without it).

Reported (CPU; the forwards of the perturbed images dominate every contender at this size): median seconds over ``--repeats`` (after one warm-up), the ratios, and the stability of each method:
the IoU of its top 10% pixels between seeds 0 and 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_xai.functional.attribution import lime, superpixels


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 8 * 8, 10)).eval()
    with torch.no_grad():
        net[-1].weight.mul_(20)  # logits that move by more than the Lasso's alpha (else every weight is 0)
    return net


def _image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    img = torch.stack([yy, xx, (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.1]).float()
    return (img + 0.05 * torch.rand(img.shape, generator=g)).unsqueeze(0)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    k = max(1, a.numel() // 10)
    ta, tb = set(a.flatten().topk(k).indices.tolist()), set(b.flatten().topk(k).indices.tolist())
    return len(ta & tb) / len(ta | tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, x = _model(), _image()
    target = int(model(x).argmax())
    segments = superpixels(x, args.segments)
    mask = segments.view(1, 1, 32, 32).expand(1, 3, 32, 32)

    def ours(seed: int) -> torch.Tensor:
        return lime(model, x, torch.tensor([target]), n_samples=args.samples, n_segments=args.segments,
                    generator=torch.Generator().manual_seed(seed), max_batch=128).values[0].sum(1)[0]

    def captum(seed: int) -> torch.Tensor:
        from captum.attr import Lime

        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.manual_seed(seed)
            return Lime(model).attribute(x, target=target, feature_mask=mask, n_samples=args.samples,
                                         perturbations_per_eval=128).sum(1)[0]

    def lime_package(seed: int) -> torch.Tensor:
        from lime import lime_image
        from lime.lime_image import LimeImageExplainer

        lime_image.tqdm = lambda rows, **_: rows  # its progress bar

        seg = segments[0].numpy()

        def classify(images: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                batch = torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()  # NCHW, as ours
                return model(batch).softmax(-1).numpy()

        exp = LimeImageExplainer(random_state=seed).explain_instance(
            x[0].permute(1, 2, 0).double().numpy(), classify, labels=(target,), top_labels=None, hide_color=0,
            num_samples=args.samples, batch_size=128, segmentation_fn=lambda _: seg)
        weights = dict(exp.local_exp[target])
        return torch.tensor(np.vectorize(lambda s: weights.get(s, 0.0))(seg), dtype=torch.float32)

    methods = {"ours (torch)": ours, "captum Lime": captum}
    try:
        import lime as _lime  # noqa: F401

        methods["lime package"] = lime_package
    except ImportError:
        print("lime package not installed (pip install lime): skipped")
    times: dict[str, list[float]] = {k: [] for k in methods}
    maps: dict[str, list[torch.Tensor]] = {}
    for name, fn in methods.items():
        maps[name] = [fn(0), fn(1)]  # warm-up and the two seeds
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(0)
            times[name].append(time.perf_counter() - start)
    print(f"LIME, 32x32 CNN, {int(segments.max()) + 1} superpixels (n_segments={args.segments}), "
          f"{args.samples} samples, {args.threads} threads, median of {args.repeats}")
    base = statistics.median(times["ours (torch)"])
    for name in methods:
        t = statistics.median(times[name])
        print(f"  {name:14s} {t:8.3f} s   x{t / base:6.1f} of ours   top-10% IoU seed 0 vs 1: "
              f"{_iou(*maps[name]):.2f}")
    diff = (maps["ours (torch)"][0] - maps["captum Lime"][0]).abs().max()
    print(f"  ours vs captum at seed 0 (one Bernoulli stream: the same samples), max |diff| / max |captum|: "
          f"{float(diff / maps['captum Lime'][0].abs().max()):.3f}")


if __name__ == "__main__":
    main()
