"""What SHAPCallback sends to the sink: scalars, figures per input kind, ``shap_values.npz`` and ``summary.json``."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks._faithfulness import METRICS, log_faithfulness
from lightning_xai.functional.shap import ShapResult, gini, modality_shares
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

if TYPE_CHECKING:
    from lightning_xai.callbacks.shap import SHAPCallback

__all__ = ["emit_shap", "input_kind"]

_AUDIO_HINTS = ("spectro", "audio", "mel", "fbank", "input_features", "input_values")


def input_kind(name: str, x: Tensor) -> str:
    """How an explained input is shown: ``tokens``, ``video``, ``spectrogram``, ``image`` or ``tabular``.

    Example:
        >>> input_kind("pixel_values", torch.zeros(2, 3, 8, 8)), input_kind("input_ids", torch.zeros(2, 5).long())
        ('image', 'tokens')
    """
    if not x.is_floating_point():
        return "tokens"
    if x.dim() == 5:
        return "video"
    if x.dim() == 3 or (x.dim() == 4 and x.shape[1] == 1 and any(h in name.lower() for h in _AUDIO_HINTS)):
        return "spectrogram"
    return "image" if x.dim() == 4 else "tabular"


def spectrogram_time_first(model: Any, x: Tensor) -> bool:
    """Is a 3-D spectrogram ``(B, frames, mel)`` (AST) rather than ``(B, mel, frames)`` (Whisper, the figures' own
    layout)? Read off the model's ``config.num_mel_bins`` (Hugging Face audio models) when it says so.

    Example:
        >>> from types import SimpleNamespace
        >>> m = torch.nn.Linear(2, 2); m.config = SimpleNamespace(num_mel_bins=36)
        >>> spectrogram_time_first(m, torch.zeros(1, 56, 36)), spectrogram_time_first(m, torch.zeros(1, 36, 56))
        (True, False)
    """
    if x.dim() != 3:
        return False
    mels = {getattr(getattr(m, "config", None), "num_mel_bins", None) for m in model.modules()}
    return x.shape[2] in mels and x.shape[1] not in mels


def _figure(cb: SHAPCallback, kind: str, name: str, x: Tensor, v: Tensor, titles: list[str], suptitle: str,
            attention: Tensor | None, time_first: bool = False) -> Any:
    from lightning_xai.render import signed_frame_strip, signed_heatmap_grid, spectrogram_plot, token_grid

    if kind == "tokens":
        tokens, keep = cb._token_strings(x), cb._special_mask(x, attention)
        return token_grid([(tokens[i], v[i], keep[i], titles[i]) for i in range(x.shape[0])], suptitle=suptitle)
    if kind == "image":
        return signed_heatmap_grid(x, v.sum(1), titles=titles, suptitle=suptitle, mean=cb.mean, std=cb.std)
    if kind == "video":
        channel_dim = 2 if x.shape[2] in (1, 3) else 1
        clips = x if channel_dim == 2 else x.transpose(1, 2)
        return signed_frame_strip(clips, v.sum(channel_dim), titles=titles, suptitle=suptitle, mean=cb.mean,
                                  std=cb.std)
    if kind == "spectrogram":  # drawn (mel, frames): frequency up, time right, whatever the model's layout
        x, v = (x.transpose(-1, -2), v.transpose(-1, -2)) if time_first else (x, v)
        return spectrogram_plot(x, v, titles=titles, suptitle=suptitle, frequency_axis="bins")
    return None


def _who(cb: SHAPCallback) -> str:
    """`` · <head>`` in titles when the callback explains a named head or runs under its own ``name``."""
    if cb.name != "shap":
        return f" · {cb.name}"
    return f" · {cb.output}" if isinstance(cb.output, (str, int)) else ""


def emit_shap(cb: SHAPCallback, result: dict[str, Any], inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
    """Log the numbers, figures and artifacts of one SHAP explanation."""
    r: ShapResult = result["result"]
    names: list[str] = result["names"]
    shown = [j for j, e in enumerate(r.explained) if e]
    values = [r.values[j].detach().float().cpu() for j in shown]
    raw = [result["inputs"][j] for j in shown]
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
            rank_zero_warn(f"lightning_xai: SHAP completeness did not reach completeness_tol={cb.completeness_tol} "
                           f"for probes {late} within max_nsamples={cb.max_nsamples} at epoch {ev.epoch} "
                           f"(relative errors {[round(float(r.relative_error[i]), 4) for i in late]}).",
                           category=RuntimeWarning)
    sink.histogram("values", torch.cat([v[torch.isfinite(v)] for v in values]).numpy())
    titles = cb._titles(result, inputs, probe)
    attention = next((result["inputs"][j] for j, n in enumerate(names) if n == "attention_mask"), None)
    summary_tokens: dict[int, list[list[Any]]] = {}
    for k, j in enumerate(shown):
        kind = input_kind(names[j], raw[k])
        suptitle = f"SHAP ({cb.engine}){_who(cb)} · {names[j]} · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
        sink.figure(names[j], partial(_figure, cb, kind, names[j], raw[k], values[k], titles, suptitle, attention,
                                      names[j] in result.get("time_first", ())))
        if kind == "tokens":
            strings, keep = cb._token_strings(raw[k]), cb._special_mask(raw[k], attention)
            summary_tokens[k] = [[[s, float(val)] for s, val, m in zip(strings[i], values[k][i].tolist(), keep[i])
                                  if m] for i in range(raw[k].shape[0])]
    if len(shown) > 1:
        from lightning_xai.render import modality_shares as shares_figure

        sink.figure("shares", partial(shares_figure, shares, [names[j] for j in shown],
                                      title=f"Share of |SHAP| per input{_who(cb)} · epoch {ev.epoch}", labels=titles))
    measured = result.get("faithfulness") or {}
    faith = {n: log_faithfulness(sink, n, res, cb._faith) for n, res in measured.items()}
    arrays = {names[j]: v.numpy() for j, v in zip(shown, values)}
    arrays.update({f"data_{names[j]}": x.numpy() for j, x in zip(shown, raw)})
    arrays.update(base_values=r.base_values.float().cpu().numpy(), outputs=r.outputs.float().cpu().numpy(),
                  completeness_error=r.completeness_error.float().cpu().numpy(),
                  predictions=np.asarray([] if result["pred"] is None else result["pred"].numpy()),
                  targets=np.asarray([] if result["target"] is None else result["target"].numpy()))
    ranked = result.get("ranked")
    if ranked:
        _emit_top_k(cb, ranked, names, shown, raw, titles, attention, arrays, sink, result.get("time_first", ()))
    sink.arrays("shap_values", arrays)
    samples = []
    for i in range(len(probe)):
        sample: dict[str, Any] = {
            "dataset_index": probe.indices[i], "title": titles[i], "base_value": float(r.base_values[i]),
            "output": float(r.outputs[i]), "relative_error": float(r.relative_error[i]),
            "prediction": None if result["pred"] is None else int(result["pred"][i]),
            "target": None if result["target"] is None else int(result["target"][i]),
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
    sink.json("summary", {"inputs": [names[j] for j in shown], "engine": cb.engine, "samples": samples,
                          **({"faithfulness": settings} if faith else {})})
    if summary_tokens:
        lines = [f"| {s['title']} | " + ", ".join(f"{t} ({v:+.3f})" for t, v in sorted(
            next(iter(summary_tokens.values()))[i], key=lambda tv: -abs(tv[1]))[:8]) + " |"
            for i, s in enumerate(samples)]
        sink.text("top_tokens", "| probe | top tokens by abs SHAP |\n|---|---|\n" + "\n".join(lines))
    sink.commit(method=cb.engine, inputs=[names[j] for j in shown])


def _emit_top_k(cb: SHAPCallback, ranked: list[tuple[Tensor, ShapResult]], names: list[str], shown: list[int],
                raw: list[Tensor], titles: list[str], attention: Tensor | None, arrays: dict[str, Any],
                sink: ArtifactSink, time_first: Any = ()) -> None:
    """Ranks 2..k of ``top_k``: figures ``<input>/top<r>``, stacked arrays and their completeness."""
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
        rank_titles = [f"{t} | rank {rank}: {cb._class_name(int(c))}" for t, c in zip(titles, target)]
        for k, j in enumerate(shown):
            kind = input_kind(names[j], raw[k])
            suptitle = (f"SHAP ({cb.engine}){_who(cb)} · {names[j]} · class ranked {rank} · {ev.stage} · epoch {ev.epoch} · "
                        f"step {ev.global_step}")
            sink.figure(f"{names[j]}/top{rank}", partial(_figure, cb, kind, names[j], raw[k],
                                                         res.values[j].detach().float().cpu(), rank_titles, suptitle,
                                                         attention, names[j] in time_first))
