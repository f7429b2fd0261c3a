"""AttributionCallback's results to the sink: per method the figures of its input kinds, ``attribution_<method>.npz``,
completeness and stability scalars; across methods one comparison figure and their rank agreement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.callbacks._emit.figures import explanation_figure
from lightning_xai.explainers import Explanation
from lightning_xai.functional import modality_shares
from lightning_xai.functional.drift import spearman
from lightning_xai.sinks import ArtifactSink

__all__ = ["AttributionOptions", "agreement", "emit_attribution", "joint_map"]


@dataclass(frozen=True)
class AttributionOptions:
    """How AttributionCallback's results are drawn: normalisation to undo, class names."""

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    class_name: Callable[[int], str] = str


def joint_map(expl: Explanation) -> Tensor:
    """One ``(B, F)`` row of |attribution| per probe over every explained input (per position: :meth:`maps`), the
    thing two methods' rankings are compared on.

    Example:
        >>> e = Explanation(method="m", values={"input": torch.tensor([[1.0, -2.0]])},
        ...                 inputs={"input": torch.zeros(1, 2)}, kinds={"input": "tabular"})
        >>> joint_map(e).tolist()
        [[1.0, 2.0]]
    """
    maps = expl.maps()
    return torch.cat([maps[name].float().flatten(1).abs() for name in sorted(maps)], dim=1)


def agreement(explanations: dict[str, Explanation]) -> dict[str, Tensor]:
    """Per pair of methods ``<a>_vs_<b>``: the Spearman rank correlation of their |attributions|, per probe (NaN
    where either map is flat). Methods whose maps have another shape (Grad-CAM's per-pixel map against SHAP's
    per-input one is fine: both are per position) are left out.

    Example:
        >>> mk = lambda v: Explanation(method="m", values={"input": v}, inputs={"input": v}, kinds={"input": "tabular"})
        >>> a = torch.tensor([[1.0, 2.0, 3.0]])
        >>> {k: v.tolist() for k, v in agreement({"x": mk(a), "y": mk(-a), "z": mk(a.flip(1))}).items()}
        {'x_vs_y': [1.0], 'x_vs_z': [-1.0], 'y_vs_z': [-1.0]}
    """
    rows = {m: joint_map(e) for m, e in explanations.items()}
    out: dict[str, Tensor] = {}
    for a, b in combinations(rows, 2):
        if rows[a].shape != rows[b].shape:
            continue
        rho = spearman(rows[a], rows[b]).float()
        flat = (rows[a].amax(1) <= rows[a].amin(1)) | (rows[b].amax(1) <= rows[b].amin(1))
        out[f"{a}_vs_{b}"] = rho.masked_fill(flat, float("nan"))
    return out


def emit_attribution(explanations: dict[str, Explanation], stability: dict[str, Tensor], titles: list[str],
                     indices: list[int], options: AttributionOptions, sink: ArtifactSink) -> None:
    """Everything of one event: one manifest line per method, then the comparison."""
    ev = sink.event
    for method, expl in explanations.items():
        values = dict(expl.values)
        bad = sum(int((~torch.isfinite(v)).sum()) for v in values.values())
        sink.scalar(f"{method}/nonfinite", bad)
        if bad:
            rank_zero_warn(f"lightning_xai: {method} gave {bad} non-finite attributions at epoch {ev.epoch}; logged "
                           f"as xai/{ev.callback}/{method}/nonfinite and left blank in the plots.",
                           category=RuntimeWarning)
        _warn_flat(method, values, indices, ev.epoch, ev.callback, sink)
        relative = getattr(expl, "relative_error", None)
        if isinstance(relative, Tensor):
            sink.scalar(f"{method}/completeness/relative_median", float(relative.float().nanmedian()))
        converged = getattr(expl, "converged", None)
        if isinstance(converged, Tensor):
            sink.scalar(f"{method}/converged", float(converged.float().mean()))
            if not bool(converged.all()):
                late = [indices[i] if indices[i] >= 0 else i for i in (~converged).nonzero().flatten().tolist()]
                rank_zero_warn(f"lightning_xai: {method} did not reach completeness_tol="
                               f"{expl.settings.get('completeness_tol')} for probes {late} within max_steps="
                               f"{expl.settings.get('max_steps')} at epoch {ev.epoch} (relative errors "
                               f"{[round(float(relative[i]), 4) for i in (~converged).nonzero().flatten()]})"
                               if isinstance(relative, Tensor) else f"lightning_xai: {method} did not converge "
                               f"for probes {late} at epoch {ev.epoch}", category=RuntimeWarning)
        if method in stability:
            iou = stability[method].float()
            sink.scalar(f"{method}/stability_iou", float(iou.nanmean()) if bool(torch.isfinite(iou).any())
                        else float("nan"))
        _shares(method, values, titles, ev.epoch, sink)
        for name, v in values.items():
            suptitle = f"{method} · {name} · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
            clean = torch.nan_to_num(v.float(), nan=0.0, posinf=0.0, neginf=0.0)
            label = None if method == "shap" else (f"{method} (red: toward the class)" if expl.signed
                                                   else f"{method} (relative)")
            sink.figure(f"{method}/{name}", partial(explanation_figure, expl, name, clean, titles, suptitle,
                                                    options.mean, options.std, label))
        arrays: dict[str, Any] = {name: v.float().numpy() for name, v in values.items()}
        arrays.update(targets=np.asarray([] if expl.target is None else expl.target.numpy()),
                      predictions=np.asarray([] if expl.prediction is None else expl.prediction.numpy()))
        if expl.base_values is not None:
            arrays["base_values"] = expl.base_values.float().numpy()
        sink.arrays(f"attribution_{method}", arrays)
        sink.json(f"summary_{method}", {"method": method, "settings": _plain(expl.settings),
                                        "inputs": list(values), "dataset_index": indices, "titles": titles,
                                        **({"stability_iou": stability[method].tolist()} if method in stability
                                           else {}),
                                        **({"relative_error": relative.tolist()} if isinstance(relative, Tensor)
                                           else {})})
        sink.commit(method=method, inputs=list(values), settings=_plain(expl.settings))
    if len(explanations) > 1:
        _comparison(explanations, titles, indices, options, sink)


def _shares(method: str, values: dict[str, Tensor], titles: list[str], epoch: int, sink: ArtifactSink) -> None:
    """Several explained inputs (image + text): ``<method>/share/<input>`` (mean over probes of each input's share
    of the total |attribution|) and the shares figure SHAPCallback draws."""
    if len(values) < 2:
        return
    from lightning_xai.render import modality_shares as shares_figure

    names = list(values)
    shares = modality_shares(tuple(torch.nan_to_num(values[n].float()) for n in names))
    for k, name in enumerate(names):
        sink.scalar(f"{method}/share/{name}", float(shares[:, k].mean()))
    sink.figure(f"{method}/shares", partial(shares_figure, shares, names,
                                            title=f"Share of |{method}| per input · epoch {epoch}", labels=titles,
                                            quantity=method))


def _warn_flat(method: str, values: dict[str, Tensor], indices: list[int], epoch: int, callback: str,
               sink: ArtifactSink) -> None:
    """``<method>/flat``: the share of probes whose map is constant over every input (it shows nothing), with a
    warning naming them: a blank map in a figure must not pass for "nothing matters"."""
    rows = torch.cat([torch.nan_to_num(v.float()).flatten(1) for v in values.values()], dim=1)
    flat = rows.amax(1) <= rows.amin(1)
    sink.scalar(f"{method}/flat", float(flat.float().mean()))
    if bool(flat.any()):
        probes = [indices[i] if i < len(indices) and indices[i] >= 0 else i for i in flat.nonzero().flatten().tolist()]
        hint = (" (a surrogate that kept no feature: raise `n_samples` or lower `alpha` through "
                f"method_kwargs={{{method!r}: {{...}}}})" if method in ("lime", "kernel_shap") else "")
        rank_zero_warn(f"lightning_xai: {method} gave a flat map (every value equal) for probes {probes} at epoch "
                       f"{epoch}: it explains nothing there{hint}; logged as xai/{callback}/{method}/flat.",
                       category=RuntimeWarning)


def _comparison(explanations: dict[str, Explanation], titles: list[str], indices: list[int],
                options: AttributionOptions, sink: ArtifactSink) -> None:
    """``agreement/<a>_vs_<b>`` (median over probes) and one figure: every method's map of each probe side by side."""
    from lightning_xai.render.drift import snapshot_grid, token_snapshot_grid
    from lightning_xai.render.overlay import denormalize

    ev = sink.event
    pairs = agreement(explanations)
    for pair, rho in pairs.items():
        sink.scalar(f"agreement/{pair}", float(rho.nanmedian()) if bool(torch.isfinite(rho).any()) else float("nan"))
    first = next(iter(explanations.values()))
    name = next(iter(first.maps()), None)
    methods = [m for m, e in explanations.items() if name in e.maps()]
    if name is not None and len(methods) > 1:
        stack = torch.stack([torch.nan_to_num(explanations[m].maps()[name].float()) for m in methods], dim=1)
        rows = [f"#{i}" if i >= 0 else f"probe {n}" for n, i in enumerate(indices)]
        suptitle = f"Methods side by side · {name} · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
        x, kind = first.inputs[name], first.kinds.get(name)
        if kind == "tokens":
            fig = partial(token_snapshot_grid, stack, first.tokens[name], rows, methods, keep=first.keep.get(name),
                          suptitle=suptitle)
        elif stack.dim() == 4:
            images = denormalize(x.float(), options.mean, options.std) if kind == "image" else None
            fig = partial(snapshot_grid, stack, rows, methods, suptitle=suptitle, images=images)
        else:
            features = [[f"x{j}" for j in range(stack[0, 0].numel())] for _ in rows]
            fig = partial(token_snapshot_grid, stack.flatten(2), features, rows, methods, suptitle=suptitle)
        sink.figure("comparison", fig)
    sink.json("agreement", {"pairs": {p: r.tolist() for p, r in pairs.items()}, "dataset_index": indices,
                            "titles": titles, "methods": list(explanations)})
    sink.commit(method="comparison", methods=list(explanations))


def _plain(obj: Any) -> Any:
    """JSON-safe settings (tensors and callables by their repr)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Tensor) and obj.numel() == 1:
        return float(obj)
    return repr(obj) if not isinstance(obj, Tensor) else f"tensor{tuple(obj.shape)}"
