"""What SHAPCallback sends to the sink: scalars, figures per input kind, ``shap_values.npz`` and ``summary.json``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.callbacks._emit.faithfulness import log_faithfulness
from lightning_xai.callbacks._emit.figures import explanation_figure
from lightning_xai.explainers import ShapExplanation
from lightning_xai.explainers.faithfulness import METRICS, FaithfulnessCheck
from lightning_xai.functional.shap import ShapResult, gini, modality_shares
from lightning_xai.sinks import ArtifactSink

__all__ = ["ShapFigureOptions", "emit_shap"]


@dataclass(frozen=True)
class ShapFigureOptions:
    """How SHAP results are drawn: who made them (`` · <name>`` in titles), normalisation to undo, class names."""

    who: str = ""
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    class_name: Callable[[int], str] = str


def emit_shap(expl: ShapExplanation, titles: list[str], indices: list[int], sink: ArtifactSink,
              options: ShapFigureOptions, measured: dict[str, Any] | None = None,
              check: FaithfulnessCheck | None = None) -> None:
    """Log the numbers, figures and artifacts of one SHAP explanation."""
    r: ShapResult = expl.result
    names: list[str] = expl.names
    shown = [j for j, e in enumerate(r.explained) if e]
    values = [expl.values[names[j]] for j in shown]
    raw = [expl.inputs[names[j]] for j in shown]
    who, engine, settings = options.who, expl.engine, expl.settings
    ev = sink.event
    bad = sum(int((~torch.isfinite(v)).sum()) for v in values)
    sink.scalar("nonfinite", bad)
    if bad:
        rank_zero_warn(f"lightning_xai: {bad} non-finite SHAP values at epoch {ev.epoch}; logged as "
                       "xai/shap/nonfinite and left blank in the plots.", category=RuntimeWarning)
    clean = [torch.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for v in values]
    sink.scalar("completeness/mean", float(r.completeness_error.float().mean()))
    sink.scalar("completeness/max", float(r.completeness_error.float().max()))
    sink.scalar("completeness/relative_median", float(r.relative_error.float().median()))
    sink.scalar("nsamples/mean", float(r.nsamples.float().mean()))
    sink.scalar("gini", float(gini(tuple(clean)).mean()))
    shares = modality_shares(tuple(clean))
    for k, j in enumerate(shown):
        sink.scalar(f"share/{names[j]}", float(shares[:, k].mean()))
    if r.converged is not None:
        sink.scalar("converged", float(r.converged.float().mean()))
        if not bool(r.converged.all()):
            late = [int(i) for i in (~r.converged).nonzero().flatten()]
            tol = settings.get("completeness_tol")
            rank_zero_warn(f"lightning_xai: SHAP completeness did not reach completeness_tol={tol} "
                           f"for probes {late} within max_nsamples={settings.get('max_nsamples')} at epoch {ev.epoch} "
                           f"(relative errors {[round(float(r.relative_error[i]), 4) for i in late]}).",
                           category=RuntimeWarning)
    sink.histogram("values", torch.cat([v[torch.isfinite(v)] for v in values]).numpy())
    summary_tokens: dict[int, list[list[Any]]] = {}
    for k, j in enumerate(shown):
        kind = expl.kinds[names[j]]
        suptitle = f"SHAP ({engine}){who} · {names[j]} · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
        sink.figure(names[j], partial(explanation_figure, expl, names[j], values[k], titles, suptitle, options.mean,
                                      options.std))
        if kind == "tokens":
            strings, keep = expl.tokens[names[j]], expl.keep[names[j]]
            summary_tokens[k] = [[[s, float(val)] for s, val, m in zip(strings[i], values[k][i].tolist(), keep[i])
                                  if m] for i in range(raw[k].shape[0])]
    if len(shown) > 1:
        from lightning_xai.render import modality_shares as shares_figure

        sink.figure("shares", partial(shares_figure, shares, [names[j] for j in shown],
                                      title=f"Share of |SHAP| per input{who} · epoch {ev.epoch}", labels=titles))
    faith = {n: log_faithfulness(sink, n, res, check) for n, res in (measured or {}).items()} if check else {}
    arrays = {names[j]: v.numpy() for j, v in zip(shown, values)}
    arrays.update({f"data_{names[j]}": x.numpy() for j, x in zip(shown, raw)})
    arrays.update(base_values=r.base_values.float().cpu().numpy(), outputs=r.outputs.float().cpu().numpy(),
                  completeness_error=r.completeness_error.float().cpu().numpy(),
                  predictions=np.asarray([] if expl.prediction is None else expl.prediction.numpy()),
                  targets=np.asarray([] if expl.target is None else expl.target.numpy()))
    ranked = expl.ranked
    if ranked:
        _emit_top_k(expl, options, ranked, shown, titles, arrays, sink)
    sink.arrays("shap_values", arrays)
    samples = []
    for i in range(len(indices)):
        sample: dict[str, Any] = {
            "dataset_index": indices[i], "title": titles[i], "base_value": float(r.base_values[i]),
            "output": float(r.outputs[i]), "relative_error": float(r.relative_error[i]),
            "prediction": None if expl.prediction is None else int(expl.prediction[i]),
            "target": None if expl.target is None else int(expl.target[i]),
            "totals": {names[j]: float(values[k][i].sum()) for k, j in enumerate(shown)},
        }
        if faith:
            sample["faithfulness"] = {n: {m: f[m][i] for m in METRICS} for n, f in faith.items()}
        for k, tokens in summary_tokens.items():
            sample[f"tokens_{names[shown[k]]}"] = tokens[i]
        if ranked:
            sample["top_k"] = [{"class": int(t[i]), "base_value": float(res.base_values[i]),
                                "output": float(res.outputs[i]), "relative_error": float(res.relative_error[i]),
                                "totals": {names[j]: float(res.values[j][i].float().sum()) for j in shown}}
                               for t, res in ranked]
        samples.append(sample)
    settings = {k: v for k, v in next(iter(faith.values()), {}).items() if k not in METRICS}
    sink.json("summary", {"inputs": [names[j] for j in shown], "engine": engine, "samples": samples,
                          **({"faithfulness": settings} if faith else {})})
    if summary_tokens:
        lines = [f"| {s['title']} | " + ", ".join(f"{t} ({v:+.3f})" for t, v in sorted(
            next(iter(summary_tokens.values()))[i], key=lambda tv: -abs(tv[1]))[:8]) + " |"
            for i, s in enumerate(samples)]
        sink.text("top_tokens", "| probe | top tokens by abs SHAP |\n|---|---|\n" + "\n".join(lines))
    sink.commit(method=engine, inputs=[names[j] for j in shown])


def _emit_top_k(expl: ShapExplanation, options: ShapFigureOptions, ranked: list[tuple[Tensor, ShapResult]],
                shown: list[int], titles: list[str], arrays: dict[str, Any], sink: ArtifactSink) -> None:
    """Ranks 2..k of ``top_k``: figures ``<input>/top<r>``, stacked arrays and their completeness."""
    names = expl.names
    ev = sink.event
    classes = torch.stack([t for t, _ in ranked], dim=1)
    arrays["top_k_classes"] = classes.numpy()
    arrays["base_values_top_k"] = torch.stack([r.base_values.float().cpu() for _, r in ranked], 1).numpy()
    arrays["outputs_top_k"] = torch.stack([r.outputs.float().cpu() for _, r in ranked], 1).numpy()
    for k, j in enumerate(shown):
        arrays[f"{names[j]}_top_k"] = torch.stack([r.values[j].detach().float().cpu() for _, r in ranked], 1).numpy()
    rel = torch.cat([r.relative_error.float().cpu() for _, r in ranked])
    sink.scalar("completeness/relative_median_top_k", float(rel.median()))
    for rank, (target, res) in enumerate(ranked[1:], start=2):
        rank_titles = [f"{t} | rank {rank}: {options.class_name(int(c))}" for t, c in zip(titles, target)]
        for j in shown:
            suptitle = (f"SHAP ({expl.engine}){options.who} · {names[j]} · class ranked {rank} · {ev.stage} · "
                        f"epoch {ev.epoch} · step {ev.global_step}")
            sink.figure(f"{names[j]}/top{rank}", partial(explanation_figure, expl, names[j],
                                                         res.values[j].detach().float().cpu(), rank_titles, suptitle,
                                                         options.mean, options.std))
