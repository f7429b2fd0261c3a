"""Grad-CAM family explanations to the sink: overlays (or frame strips), arrays, histograms, localisation scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.callbacks._emit.faithfulness import log_faithfulness
from lightning_xai.callbacks._gradcam_checks import warn_flat
from lightning_xai.explainers import CAMExplanation
from lightning_xai.explainers.faithfulness import FaithfulnessCheck
from lightning_xai.functional.localization import energy_in_mask, pointing_game, zhang_tolerance
from lightning_xai.sinks import ArtifactSink

__all__ = ["PRETTY", "CAMFigureOptions", "emit_gradcam"]

PRETTY = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM", "layercam": "Layer-CAM",
          "hirescam": "HiResCAM", "scorecam": "Score-CAM", "eigencam": "Eigen-CAM", "ablationcam": "Ablation-CAM"}


@dataclass(frozen=True)
class CAMFigureOptions:
    """How Grad-CAM results are drawn and scored: normalisation to undo, opacity, pointing-game tolerance."""

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    alpha: float = 0.5
    pointing_tolerance: int | None = None


def emit_gradcam(explanations: dict[str, CAMExplanation], titles: list[str], indices: list[int], mask: Tensor | None,
                 options: CAMFigureOptions, sink: ArtifactSink, faith: dict[str, Any] | None = None,
                 check: FaithfulnessCheck | None = None) -> None:
    """One manifest line per method: figure, ``gradcam_<method>.npy``, histogram, summary JSON, scalars."""
    from lightning_xai.render import frame_strip, overlay_grid

    first = next(iter(explanations.values()))
    ev = sink.event
    warn_flat(first.layer, {m: e.flat for m, e in explanations.items()}, first.candidates, ev.epoch)
    for method, expl in explanations.items():
        maps = expl.values[expl.key]
        image, shown = expl.inputs[expl.key].float(), maps
        if expl.layouts.get(expl.key) == "BCTHW":
            image = image.permute(0, 2, 1, 3, 4)
        if image.dim() == 3:  # a spectrogram, drawn (B, 1, mel, frames): time right, frequency up
            flip = (lambda t: t.transpose(1, 2)) if expl.key in expl.time_first else (lambda t: t)
            image, shown = flip(image).unsqueeze(1), flip(shown)
        finite = torch.isfinite(maps)
        bad = int((~finite).sum())
        if bad:
            rows = sorted({int(i) for i in (~finite).flatten(1).any(1).nonzero().flatten()})
            rank_zero_warn(
                f"lightning_xai: {PRETTY.get(method, method)} gave {bad} non-finite values for probes {rows} at "
                f"epoch {ev.epoch}; logged as xai/gradcam/{method}/nonfinite and left blank in the plot.",
                category=RuntimeWarning,
            )
        sink.scalar(f"{method}/nonfinite", bad)
        sink.scalar(f"{method}/flat", sum(expl.flat) / max(len(expl.flat), 1))
        suptitle = (f"{PRETTY.get(method, method)} · layer {expl.layer} · {ev.stage} · epoch {ev.epoch} · "
                    f"step {ev.global_step}")
        if image.dim() == 5:
            fig = partial(frame_strip, image, maps, titles=titles, suptitle=suptitle, mean=options.mean,
                          std=options.std, alpha=options.alpha)
        else:
            axes = ("time frame", "frequency bin") if expl.kinds.get(expl.key) == "spectrogram" else None
            fig = partial(overlay_grid, image, shown, titles=titles, suptitle=suptitle, mean=options.mean,
                          std=options.std, alpha=options.alpha, axis_labels=axes)
        sink.figure(method, fig)  # drawn at commit, after the arrays and JSON below
        sink.array(f"gradcam_{method}", maps.numpy())
        sink.histogram(f"{method}/values", maps[finite].numpy())
        summary = _localisation(method, maps, mask, options.pointing_tolerance, sink)
        if check is not None:
            summary["faithfulness"] = log_faithfulness(sink, method, (faith or {}).get(method), check)
        sink.json(f"summary_{method}", {"layer": expl.layer, "reshape": expl.reshape, "flat": expl.flat,
                                        "dataset_index": indices, "titles": titles, **summary})
        sink.commit(method=method, layer=expl.layer, reshape=expl.reshape)


def _localisation(method: str, maps: Tensor, mask: Tensor | None, tolerance: int | None,
                  sink: ArtifactSink) -> dict[str, Any]:
    if mask is None:
        return {}
    mask = mask.float()
    if mask.dim() == maps.dim() + 1 and mask.shape[1] == 1:
        mask = mask[:, 0]
    clean = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    tol = zhang_tolerance(*maps.shape[-2:]) if tolerance is None else tolerance
    hits = pointing_game(clean, mask, tolerance=tol).float()
    energy = energy_in_mask(clean, mask)
    sink.scalar(f"{method}/pointing_game", float(hits.mean()))
    sink.scalar(f"{method}/energy_in_mask", float(energy.mean()))
    return {"pointing_game": hits.tolist(), "pointing_tolerance": tol, "energy_in_mask": energy.tolist()}
