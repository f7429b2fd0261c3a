"""Where a model's attention probabilities come from: the modules whose output carries them, found by structure.

Pure torch (Hugging Face classes are recognised by their ``_can_record_outputs`` table, never imported). Three kinds
of site, in this order of preference:

* Hugging Face attention layers: the modules each model declares under ``"attentions"`` in its
  ``_can_record_outputs`` table (the ones ``output_attentions=True`` reads), dispatched per sub-model as transformers
  does, with the output index it names (``1``: ``(attn_output, attn_weights)``);
* ``nn.MultiheadAttention`` modules (torchvision's ``VisionTransformer``, hand-written models);
* modules named by the user with ``attention_modules=``: their output is the ``(B, heads, q, k)`` probabilities
  (a softmax or attention-dropout module), or a tuple whose second item is.

Divided space-time attention (TimeSformer) is read from each block's two attention-dropout modules (their output
is the probabilities), tagged ``"temporal"`` and ``"spatial"``: see :func:`divided_sites` and ``_divided``. Window
attention (Swin) is refused: see :func:`refuse_window_attention`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_xai._checks import expected

__all__ = ["AttentionSite", "attention_candidates", "divided_sites", "find_attention_modules",
           "refuse_window_attention"]

_MAX_LISTED = 12
_WINDOW_MODEL_TYPES = ("swin", "swinv2", "donut-swin", "maskformer-swin", "swin2sr", "swiftformer")


@dataclass(frozen=True)
class AttentionSite:
    """One module whose output carries attention probabilities.

    Attributes:
        name: its dotted name in the model.
        module: the module.
        index: the item of its (tuple) output holding the ``(B, heads, q, k)`` probabilities; ``None``: the output
            itself, or its second item when it is a tuple (``attention_modules=`` given by name).
        kind: ``"hf"`` (a Hugging Face attention layer, read under eager attention), ``"mha"``
            (``nn.MultiheadAttention``, called with ``need_weights=True, average_attn_weights=False``),
            ``"named"`` (named by the user), or ``"temporal"`` / ``"spatial"`` (the two sub-attentions of a divided
            space-time block, whose output is the probabilities).
    """

    name: str
    module: nn.Module
    index: int | None
    kind: str


def attention_candidates(model: nn.Module) -> list[str]:
    """Names worth suggesting for ``attention_modules=``: modules whose name or class says attention (``attn``,
    ``attention``), innermost first, at most 12.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> net.add_module("attn", nn.Sequential(nn.Linear(2, 2), nn.Softmax(-1)))
        >>> attention_candidates(net)
        ['attn', 'attn.1']
    """
    names = [n for n, m in model.named_modules() if n and (
        any(h in n.rpartition(".")[2].lower() for h in ("attn", "attention", "softmax"))
        or any(h in type(m).__name__.lower() for h in ("attention", "softmax")))]
    return names[:_MAX_LISTED] + ([f"... {len(names) - _MAX_LISTED} more"] if len(names) > _MAX_LISTED else [])


def refuse_window_attention(model: nn.Module, modules: Sequence[nn.Module] | None = None) -> None:
    """Raise for window attention (Swin, Swin V2, Swin3D, and any ``...WindowAttention...`` class).

    Rollout multiplies one ``(tokens x tokens)`` attention matrix per layer over the same token set. Swin attends
    within local windows that shift every other block, and merges patches between stages, so there is no matrix over
    the image's tokens per layer and the product is not defined (a per-window rollout would explain windows, not the
    prediction). The error names the alternatives.

    Raises:
        ValueError: for such a model (or such ``modules``), naming ``attention_modules=`` and other methods.

    Example:
        >>> refuse_window_attention(nn.Sequential(nn.MultiheadAttention(4, 2)))  # global attention: fine
    """
    model_types = set() if modules is not None else {
        getattr(getattr(m, "config", None), "model_type", None) for m in model.modules()}
    pool = list(model.named_modules()) if modules is None else [("", m) for m in modules]
    window = [(n, type(m).__name__) for n, m in pool
              if "windowattention" in type(m).__name__.lower() or type(m).__name__.lower().startswith("swin")
              or "swin" in type(m).__module__.lower().rpartition(".")[2]]
    found = sorted(t for t in model_types if isinstance(t, str) and t in _WINDOW_MODEL_TYPES)
    if not window and not found:
        return
    what = f"model type {found[0]!r}" if found else f"{window[0][1]} at {window[0][0]!r}"
    raise ValueError(
        expected("attention_modules", "global self-attention layers (one tokens x tokens matrix per layer)",
                 f"window attention ({what})")
        + " Attention rollout multiplies one attention matrix per layer over the same tokens; Swin-style models "
        "attend within local windows that shift every other block and merge patches between stages, so that "
        "product is not defined and lightning_xai refuses rather than draw a map that means nothing. Explain this "
        "model with `method='gradcam'` (`reshape_transform=lightning_xai.functional.swin_reshape_transform`) or an "
        "attribution method ('integrated_gradients', 'shap', 'occlusion'); for a model with global attention layers "
        "as well, name them with `attention_modules=`.")


def divided_sites(model: nn.Module) -> list[AttentionSite] | None:
    """The two attention-dropout modules of each divided space-time block (TimeSformer), whose outputs are the
    probabilities: the temporal attention's (kind ``"temporal"``) then the spatial attention's (``"spatial"``);
    ``None`` for models without such blocks. Recognised by structure: a block with ``attention_type`` and
    ``temporal_attention.attention.attn_drop`` beside ``attention.attention.attn_drop``.

    Raises:
        ValueError: for TimeSformer blocks with another ``attention_type`` (``"space_only"`` attends per frame with
            the frames in the batch; ``"joint_space_time"`` orders its tokens patch-major), naming
            ``attention_modules``.

    Example:
        >>> divided_sites(nn.Sequential(nn.MultiheadAttention(4, 2))) is None
        True
    """
    sites, other = [], None
    for name, module in model.named_modules():
        kind = getattr(module, "attention_type", None)
        if not isinstance(kind, str) or not hasattr(getattr(module, "attention", None), "attention"):
            continue
        if kind != "divided_space_time":
            other = other or (name, kind)
            continue
        for sub, label in (("temporal_attention", "temporal"), ("attention", "spatial")):
            drop = getattr(getattr(getattr(module, sub, None), "attention", None), "attn_drop", None)
            if not isinstance(drop, nn.Module):
                return None
            sites.append(AttentionSite(f"{name}.{sub}.attention.attn_drop", drop, None, label))
    if other is not None:
        raise ValueError(
            expected("attention_modules", "a TimeSformer with attention_type='divided_space_time'",
                     f"attention_type={other[1]!r} at {other[0]!r}")
            + " lightning_xai rolls out TimeSformer's divided space-time attention (temporal, then spatial, "
            "composed per block); for other attention types name the modules whose output is the probabilities "
            "with `attention_modules=` and give `reshape_transform=` for their token order.")
    return sites or None


def _specs(cls: type) -> list[tuple[type | None, str | None, int, str | None]]:
    """A Hugging Face model class's ``"attentions"`` recorders as ``(class, class-name suffix, index, layer name)``
    (its ``_can_record_outputs`` entries: a class, a name, or an ``OutputRecorder``)."""
    table = getattr(cls, "_can_record_outputs", None) or {}
    entries = table.get("attentions")
    entries = [] if entries is None else (entries if isinstance(entries, list) else [entries])
    out = []
    for spec in entries:
        if isinstance(spec, type):
            out.append((spec, None, 1, None))
        elif isinstance(spec, str):
            out.append((None, spec, 1, None))
        else:  # an OutputRecorder
            out.append((getattr(spec, "target_class", None), getattr(spec, "class_name", None),
                        int(getattr(spec, "index", 1)), getattr(spec, "layer_name", None)))
    return out


def _matches(spec: tuple[type | None, str | None, int, str | None], name: str, module: nn.Module) -> bool:
    cls, suffix, _, layer_name = spec
    if not ((cls is not None and isinstance(module, cls)) or (suffix is not None and name.endswith(suffix))):
        return False
    return layer_name is None or f".{layer_name.strip('.')}." in f".{name}."


def _hf_sites(model: nn.Module) -> list[AttentionSite]:
    """Hugging Face attention layers, each sub-model (a class with ``_can_record_outputs``) dispatching its own
    table to the modules below it, as transformers installs its ``output_attentions`` hooks."""
    sites: list[AttentionSite] = []

    def walk(module: nn.Module, prefix: str, specs: list[Any]) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            own = specs
            if hasattr(type(child), "_can_record_outputs"):
                own = _specs(type(child))
            hit = next((s for s in own if _matches(s, name, child)), None)
            if hit is not None:
                sites.append(AttentionSite(name, child, hit[2], "hf"))
                continue  # an attention layer's inner modules are not attention layers of their own
            walk(child, name, own)

    walk(model, "", _specs(type(model)) if hasattr(type(model), "_can_record_outputs") else [])
    return sites


def find_attention_modules(model: nn.Module, attention_modules: str | Sequence[str] | None = None
                           ) -> list[AttentionSite]:
    """The modules whose outputs carry ``model``'s attention probabilities, in definition order.

    Args:
        model: the model.
        attention_modules: dotted module names (``fnmatch`` patterns allowed: ``"encoder.layer.*.attention.self"``)
            whose output is the ``(B, heads, q, k)`` probabilities or a tuple whose second item is; ``None`` finds
            them: Hugging Face attention layers, else every ``nn.MultiheadAttention``.

    Returns:
        One :class:`AttentionSite` per module.

    Raises:
        ValueError: for window attention (:func:`refuse_window_attention`), for a name that matches no module, or
            when nothing is found: the message names ``attention_modules=`` and lists candidate modules.

    Example:
        >>> net = nn.Sequential(nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 2))
        >>> [(s.name, s.kind) for s in find_attention_modules(net)]
        [('0', 'mha')]
    """
    if attention_modules is not None:
        return _named_sites(model, attention_modules)
    refuse_window_attention(model)
    sites = divided_sites(model) or _hf_sites(model)
    if not sites:
        sites = [AttentionSite(n, m, 1, "mha") for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if not sites:
        raise ValueError(
            expected("attention_modules", "the dotted names of the modules whose output holds the attention "
                     "probabilities (batch, heads, queries, keys), or a tuple whose second item does",
                     None)
            + f" {type(model).__name__} has no Hugging Face attention layer (read under eager attention) and no "
            f"nn.MultiheadAttention, so lightning_xai cannot find its attention by itself. Candidates: "
            f"{attention_candidates(model)}.")
    return sites


def _named_sites(model: nn.Module, attention_modules: str | Sequence[str]) -> list[AttentionSite]:
    patterns = [attention_modules] if isinstance(attention_modules, str) else list(attention_modules)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(expected("attention_modules", "None or a non-empty list of dotted module names",
                                  attention_modules))
    modules = dict(model.named_modules())
    hf = {s.name: s for s in _hf_sites(model)}
    chosen: dict[str, nn.Module] = {}
    for pattern in patterns:
        hits = [n for n in modules if n and (n == pattern or fnmatch.fnmatchcase(n, pattern))]
        if not hits:
            raise ValueError(
                expected("attention_modules", f"names of submodules of {type(model).__name__}", pattern)
                + f" Candidates: {attention_candidates(model)}.")
        chosen.update({n: modules[n] for n in hits})
    refuse_window_attention(model, list(chosen.values()))
    order = {n: i for i, n in enumerate(modules)}
    sites = []
    for name in sorted(chosen, key=order.__getitem__):
        module = chosen[name]
        if name in hf:
            sites.append(hf[name])
        elif isinstance(module, nn.MultiheadAttention):
            sites.append(AttentionSite(name, module, 1, "mha"))
        else:
            sites.append(AttentionSite(name, module, None, "named"))
    return sites
