"""The probe split under DDP: one explanation step on 1 process vs 2 CPU processes (strategy="ddp"), same probe.

    python benchmarks/ddp.py [--samples 32] [--size 64] [--repeats 3] [--figures inline] [--quick]

A torchvision ResNet-18 (random init, 3 classes) validated on ``--samples`` * 2 random images of ``--size`` px;
on one Trainer: GradCAMCallback (Grad-CAM at ``layer4``), AttributionCallback (saliency, and occlusion with 16-px windows) and
SHAPCallback (16 background samples, ``nsamples=16``, one round: ``completeness_tol=None``), each on a
``--samples`` probe, figures drawn in the loop (``--figures inline``, the default here: with 2 ranks on 2 cores a
drawing process would take CPU from the explanations it is timed against; ``background`` shows that). Each configuration runs ``trainer.validate`` once to warm
up, then ``--repeats`` times; the table shows, 1 process vs 2 processes of 1 torch thread each (medians, rank
zero): the seconds inside its explainers' ``explain`` (its share of the probe), and the callback's whole step
``xai/<name>/seconds`` (that, the gather, the model hash, writing the artifacts), their ratios, and whether the
maps agree (largest absolute difference of the first method's array).
Every method here is split across the ranks (each explains half the probe; ``Explainer.splits_on``). Needs 2 free
cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CALLBACKS = ("gradcam", "attribution", "shap")


def child(args: argparse.Namespace) -> None:
    """One Trainer (1 or 2 processes): validate ``repeats + 1`` times, print each step's seconds as JSON."""
    sys.path.insert(0, str(ROOT))
    import logging

    import torch
    from lightning.pytorch import LightningModule, Trainer, seed_everything
    from torch.utils.data import DataLoader, TensorDataset
    from torchvision.models import resnet18

    from lightning_xai import AttributionCallback, GradCAMCallback, SHAPCallback
    from lightning_xai.explainers import AttributionExplainer, CAMExplainer, ShapExplainer

    explaining: dict[str, float] = {name: 0.0 for name in CALLBACKS}  # seconds inside Explainer.explain, this rank
    for cls, name in ((CAMExplainer, "gradcam"), (AttributionExplainer, "attribution"), (ShapExplainer, "shap")):
        def timed(self, *a, _explain=cls.explain, _name=name, **k):
            start = time.perf_counter()
            try:
                return _explain(self, *a, **k)
            finally:
                explaining[_name] += time.perf_counter() - start

        cls.explain = timed

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    class Classifier(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = resnet18(num_classes=3)

        def forward(self, x):
            return self.net(x)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y), sync_dist=True)

    seed_everything(0, verbose=False)
    n = args.samples * 2
    data = TensorDataset(torch.rand(n, 3, args.size, args.size), torch.arange(n) % 3)
    model = Classifier()
    shared = dict(num_samples=args.samples, figures=args.figures)
    callbacks = [GradCAMCallback(target_layer="net.layer4", **shared),
                 AttributionCallback(methods=("saliency", "occlusion"), method_kwargs={"occlusion": {"patch": (16, 16)}},
                                     **shared),
                 SHAPCallback(n_background=16, nsamples=16, completeness_tol=None, **shared)]
    devices = args.child
    trainer = Trainer(accelerator="cpu", devices=devices, callbacks=callbacks, strategy="ddp" if devices > 1 else "auto",
                      logger=False, default_root_dir=args.out, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False)
    seconds: dict[str, list[float]] = {name: [] for name in CALLBACKS}
    inside: dict[str, list[float]] = {name: [] for name in CALLBACKS}
    for run in range(args.repeats + 1):
        explaining.update({name: 0.0 for name in CALLBACKS})
        trainer.validate(model, DataLoader(data, batch_size=16), verbose=False)
        if run > 0:
            for name in CALLBACKS:
                seconds[name].append(float(trainer.callback_metrics[f"xai/{name}/seconds"]))
                inside[name].append(explaining[name])
    if trainer.is_global_zero:
        print("SECONDS " + json.dumps({"step": seconds, "explain": inside}))


def _arrays(folder: str) -> dict[str, np.ndarray]:
    """The last validate run's first array of each callback."""
    out = {}
    for name, pattern in (("gradcam", "gradcam_gradcam.npy"), ("attribution", "attribution_saliency.npz"),
                          ("shap", "shap_values.npz")):
        path = sorted(Path(folder).rglob(pattern), key=lambda p: p.stat().st_mtime)[-1]
        loaded = np.load(path)
        out[name] = loaded if isinstance(loaded, np.ndarray) else loaded[loaded.files[0]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--figures", default="inline", help="where the callbacks draw: inline (default: no drawing "
                        "process competes with the 2 ranks for 2 cores) or background")
    parser.add_argument("--quick", action="store_true", help="4 samples of 32 px, 1 repeat: a smoke run")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.size, args.repeats = 4, 32, 1
    if args.child:
        child(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    results, arrays = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for devices in (1, 2):
            out = os.path.join(folder, str(devices))
            cmd = [sys.executable, __file__, "--child", str(devices), "--out", out, "--samples", str(args.samples),
                   "--size", str(args.size), "--repeats", str(args.repeats), "--figures", args.figures]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                sys.exit(f"benchmarks/ddp.py: the {devices}-process run failed:\n{proc.stderr[-4000:]}")
            line = next(x for x in proc.stdout.splitlines() if x.startswith("SECONDS "))
            results[devices] = json.loads(line[len("SECONDS "):])
            arrays[devices] = _arrays(out)
    print(f"ResNet-18 at {args.size} px, probe of {args.samples}, 1 torch thread per process, median of "
          f"{args.repeats} validate runs")
    print("| callback | explain s, 1 process | explain s, 2 processes | ratio | step s, 1 process | step s, 2 processes "
          "| ratio | max abs diff of maps |")
    print("|---|---|---|---|---|---|---|---|")
    for name in CALLBACKS:
        e1, e2 = (statistics.median(results[d]["explain"][name]) for d in (1, 2))
        s1, s2 = (statistics.median(results[d]["step"][name]) for d in (1, 2))
        diff = float(np.abs(arrays[1][name] - arrays[2][name]).max())
        print(f"| {name} | {e1:.3f} | {e2:.3f} | {e2 / e1:.2f} | {s1:.3f} | {s2:.3f} | {s2 / s1:.2f} | {diff:.1e} |")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
