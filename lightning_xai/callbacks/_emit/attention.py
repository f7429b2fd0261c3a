"""AttentionCallback's results to the sink: per method the figure of its input kind and ``attention_<method>.npz``;
for ``"attention"`` a layer x head grid of the first probe; across methods their rank agreement."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.callbacks._emit.attribution import AttributionOptions, agreement
from lightning_xai.callbacks._emit.figures import explanation_figure
from lightning_xai.explainers import AttentionExplanation, Explanation
from lightning_xai.functional.drift import spearman
from lightning_xai.sinks import ArtifactSink

__all__ = ["cross_agreement", "emit_attention", "heads_figure"]


def heads_figure(expl: AttentionExplanation, title: str, suptitle: str) -> Any:
    """Layers x heads (and their mean) of the first probe: query x key matrices with the tokens on both axes for
    text (padding left out), the row read (class token or mean) on the token grid otherwise (clips: averaged over
    time; waveforms: one row)."""
    from lightning_xai.render import attention_heads_grid

    name = expl.key
    if expl.kinds[name] == "tokens" and expl.raw is not None:
        maps = expl.raw[0]
        mask = expl.inputs.get("attention_mask")
        valid = mask[0].bool() if isinstance(mask, Tensor) else torch.ones(maps.shape[-1], dtype=torch.bool)
        maps = maps[:, :, valid][:, :, :, valid]
        tokens = [t for t, v in zip(expl.tokens[name][0], valid.tolist()) if v]
    else:
        maps, tokens = expl.head_scores[0], None  # type: ignore[index]
        if maps.dim() == 5:  # (layers, heads, t, h, w): averaged over time
            maps = maps.mean(2)
        elif maps.dim() == 3:  # (layers, heads, tokens) in a row
            maps = maps[:, :, None, :]
    maps = torch.cat([maps, maps.mean(1, keepdim=True)], dim=1)
    rows = [f"layer {i}" for i in range(maps.shape[0])]
    cols = [f"head {i}" for i in range(maps.shape[1] - 1)] + ["mean"]
    return attention_heads_grid(maps, rows, cols, tokens=tokens, suptitle=f"{suptitle}\n{title}")


def cross_agreement(attention: dict[str, AttentionExplanation],
                    others: dict[str, Explanation]) -> dict[str, Tensor]:
    """Per attention method ``a`` and attribution method ``b`` (another callback's, on the same probe and target):
    ``<a>_vs_<b>``, the per-probe Spearman correlation of |map| over the positions of the attention's input (NaN
    where either map is flat). Pairs whose maps of that input have different shapes are left out.

    Example:
        >>> x = torch.zeros(1, 3)
        >>> scores = torch.tensor([[0.1, 0.5, 0.4]])
        >>> att = AttentionExplanation(method="rollout", values={"input_ids": scores}, inputs={"input_ids": x},
        ...                            kinds={"input_ids": "tokens"}, key="input_ids", scores=scores)
        >>> ig = Explanation(method="ig", values={"input_ids": torch.tensor([[0.0, -2.0, 1.0]])},
        ...                  inputs={"input_ids": x}, kinds={"input_ids": "tokens"})
        >>> {k: v.tolist() for k, v in cross_agreement({"rollout": att}, {"ig": ig}).items()}
        {'rollout_vs_ig': [1.0]}
    """
    out: dict[str, Tensor] = {}
    for a, expl in attention.items():
        mine = expl.maps().get(expl.key)
        if mine is None:
            continue
        rows_a = mine.float().flatten(1).abs()
        for b, other in others.items():
            theirs = other.maps().get(expl.key)
            if b == a or theirs is None or tuple(theirs.shape) != tuple(mine.shape):
                continue
            rows_b = theirs.float().flatten(1).abs()
            flat = (rows_a.amax(1) <= rows_a.amin(1)) | (rows_b.amax(1) <= rows_b.amin(1))
            out[f"{a}_vs_{b}"] = spearman(rows_a, rows_b).float().masked_fill(flat, float("nan"))
    return out


def emit_attention(explanations: dict[str, AttentionExplanation], titles: list[str], indices: list[int],
                   options: AttributionOptions, sink: ArtifactSink,
                   others: dict[str, Explanation] | None = None) -> None:
    """Everything of one event: one manifest line per method, then the agreement between methods (and with
    ``others``, the attribution methods of other callbacks on the same probe)."""
    ev = sink.event
    for method, expl in explanations.items():
        name = expl.key
        values = expl.values[name]
        bad = int((~torch.isfinite(values)).sum())
        sink.scalar(f"{method}/nonfinite", bad)
        if bad:
            rank_zero_warn(f"lightning_xai: {method} gave {bad} non-finite scores at epoch {ev.epoch}; logged as "
                           f"xai/{ev.callback}/{method}/nonfinite and left blank in the plots.", category=RuntimeWarning)
        suptitle = f"{method} · {name} · {ev.stage} · epoch {ev.epoch} · step {ev.global_step}"
        clean = torch.nan_to_num(values.float(), nan=0.0, posinf=0.0, neginf=0.0)
        sink.figure(f"{method}/{name}", partial(explanation_figure, expl, name, clean, titles, suptitle,
                                                options.mean, options.std, f"{method} (relative)"))
        if expl.head_scores is not None or expl.raw is not None:
            sink.figure(f"{method}/heads", partial(heads_figure, expl, titles[0], suptitle))
        arrays: dict[str, Any] = {"scores": expl.scores.float().numpy(), "maps": values.float().numpy(),
                                  "targets": np.asarray([] if expl.target is None else expl.target.numpy()),
                                  "predictions": np.asarray([] if expl.prediction is None else expl.prediction.numpy())}
        for key in ("raw", "head_scores", "weights"):
            if getattr(expl, key) is not None:
                arrays[key] = getattr(expl, key).float().numpy()
        sink.arrays(f"attention_{method}", arrays)
        summary = {"method": method, "settings": _plain(expl.settings), "input": name, "modules": list(expl.modules),
                   "query": expl.query, "num_prefix_tokens": expl.num_prefix_tokens, "dataset_index": indices,
                   "titles": titles}
        sink.json(f"summary_{method}", summary)
        sink.commit(method=method, inputs=[name], settings=_plain(expl.settings))
    pairs = agreement(dict(explanations)) if len(explanations) > 1 else {}
    pairs.update(cross_agreement(explanations, others or {}))
    if pairs:
        for pair, rho in pairs.items():
            sink.scalar(f"agreement/{pair}", float(rho.nanmedian()) if bool(torch.isfinite(rho).any())
                        else float("nan"))
        sink.json("agreement", {"pairs": {p: r.tolist() for p, r in pairs.items()}, "dataset_index": indices,
                                "methods": list(explanations), "compared_with": list(others or {})})
        sink.commit(method="agreement", methods=list(explanations), compared_with=list(others or {}))


def _plain(obj: Any) -> Any:
    """JSON-safe settings."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if obj is None or isinstance(obj, (str, int, float, bool)) else repr(obj)
