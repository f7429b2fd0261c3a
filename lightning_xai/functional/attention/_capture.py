"""Capture the exact attention probabilities of every layer (and the explained score's gradient to them) while the
model runs, whatever attention implementation it was configured with; the model is left exactly as it was.

* Hugging Face models default to SDPA (or flash) attention, which returns no probabilities. :func:`eager_attention`
  sets every Hugging Face config reachable from the model (each sub-model's, each sub-config) to ``"eager"`` for
  the block and restores each one's own value afterwards (absent stays absent); the attention layers' own outputs
  then carry the probabilities, read by forward hooks.
* ``nn.MultiheadAttention`` (torchvision's ``VisionTransformer`` calls it with ``need_weights=False``) is called
  with ``need_weights=True, average_attn_weights=False`` by a forward pre-hook for the block: PyTorch's own
  probability path, whose output is the one the model computes with them.

Gradients are taken with ``torch.autograd.grad`` of the summed scores with respect to the captured probabilities
(never ``.backward()``; parameter ``.grad`` is never written). Everything runs inside
:func:`~lightning_xai.functional._guard.explanation_mode` (hooks, modes, ``requires_grad``, ``.grad``, RNG
restored, even on error).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional._targets import check_class_bounds, check_class_target
from lightning_xai.functional.attention._sites import AttentionSite, find_attention_modules

__all__ = ["AttentionCapture", "capture_attention", "eager_attention"]

_MISSING = object()
_IMPLEMENTATION = "_attn_implementation_internal"


@dataclass(frozen=True)
class AttentionCapture:
    """What one forward pass recorded.

    Attributes:
        attentions: per attention call in execution order, the ``(B, heads, q, k)`` probabilities (float32,
            detached).
        gradients: the same shapes: the gradient of the summed explained scores to each (``None`` unless asked).
        modules: the dotted name of the module of each call.
        kinds: the kind of the site of each call (:class:`AttentionSite`): ``"temporal"`` and ``"spatial"`` mark
            divided space-time attention (TimeSformer), whose calls :func:`divided_attention` splits.
        output: the forward's output, detached when it is a tensor (``(B, classes)`` logits for class targets).
        scores: the explained score per sample (``None`` without a target).
    """

    attentions: tuple[Tensor, ...]
    gradients: tuple[Tensor, ...] | None
    modules: tuple[str, ...]
    output: Any
    scores: Tensor | None
    kinds: tuple[str, ...] = ()


def _is_config(value: Any) -> bool:
    return hasattr(type(value), "_attn_implementation") and _IMPLEMENTATION in getattr(value, "__dict__", {})


def _configs(model: nn.Module) -> list[Any]:
    """Every Hugging Face config object reachable from the model: modules' ``config`` attributes (and any other
    attribute holding one) and, recursively, their ``sub_configs``."""
    found: dict[int, Any] = {}
    stack = [v for m in model.modules() for v in vars(m).values() if _is_config(v)]
    while stack:
        config = stack.pop()
        if id(config) in found:
            continue
        found[id(config)] = config
        stack += [sub for key in (getattr(config, "sub_configs", None) or {})
                  if _is_config(sub := getattr(config, key, None))]
    return list(found.values())


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run Hugging Face attention eagerly inside the block (every config reachable from ``model``, sub-configs
    included); each config's own implementation flag is put back afterwards, even on error. Models without Hugging
    Face configs are untouched.

    Example:
        >>> import transformers
        >>> cfg = transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
        >>> bert = transformers.BertModel(cfg)
        >>> with eager_attention(bert):
        ...     inside = bert.encoder.layer[0].attention.self.config._attn_implementation
        >>> inside, bert.config._attn_implementation
        ('eager', 'sdpa')
    """
    saved = [(c, c.__dict__.get(_IMPLEMENTATION, _MISSING)) for c in _configs(model)]
    try:
        for config, _ in saved:
            config.__dict__[_IMPLEMENTATION] = "eager"
        yield
    finally:
        for config, value in saved:
            if value is _MISSING:
                config.__dict__.pop(_IMPLEMENTATION, None)
            else:
                config.__dict__[_IMPLEMENTATION] = value


def _mha_pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Call ``nn.MultiheadAttention`` with ``need_weights=True, average_attn_weights=False``."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    arguments = dict(bound.arguments)
    head = tuple(arguments.pop(k) for k in ("query", "key", "value"))
    arguments.update(need_weights=True, average_attn_weights=False)
    if arguments.get("is_causal") and arguments.get("attn_mask") is None:
        raise ValueError(f"lightning_xai cannot read the attention probabilities of the nn.MultiheadAttention "
                         f"{type(module).__name__} called with is_causal=True and no attn_mask (PyTorch computes no "
                         "probabilities then); pass the causal mask as attn_mask.")
    return head, arguments


def _weights_of(site: AttentionSite, output: Any) -> Tensor:
    """The ``(B, heads, q, k)`` probabilities in a site's output."""
    if site.index is None:
        value = output if isinstance(output, Tensor) else (
            output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None)
    else:
        value = output[site.index] if isinstance(output, (tuple, list)) and len(output) > site.index else None
    if not isinstance(value, Tensor) or value.dim() != 4:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        why = (" (a Hugging Face layer that returns none under eager attention: name the modules that compute "
               "them with `attention_modules=`)" if site.kind == "hf" else "")
        raise ValueError(expected("attention_modules", "modules whose output is the (batch, heads, queries, keys) "
                                  "attention probabilities, or a tuple whose second item is",
                                  f"{site.name!r} returning {got}") + why)
    return value


@contextlib.contextmanager
def _hooks(sites: Sequence[AttentionSite], calls: list[tuple[AttentionSite, Tensor]]) -> Iterator[None]:
    handles = []
    try:
        for site in sites:
            if site.kind == "mha":
                handles.append(site.module.register_forward_pre_hook(_mha_pre_hook, with_kwargs=True))

            def hook(module: nn.Module, args: Any, output: Any, site: AttentionSite = site) -> None:
                calls.append((site, _weights_of(site, output)))

            handles.append(site.module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _scores(output: Any, target: Tensor | Callable[[Any], Tensor], batch: int) -> Tensor:
    if isinstance(target, Tensor):
        if not isinstance(output, Tensor) or output.dim() != 2:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise TypeError(expected("forward_fn", "a function returning (batch, classes) logits for class-index "
                                     "targets", got))
        check_class_bounds(target, output.shape[1])
        return output.gather(1, target.to(output.device).reshape(-1, 1)).squeeze(1)
    scores = target(output)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (batch,):
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(expected("target", f"a callable returning a ({batch},) tensor of scores", got))
    return scores


def _gradients(scores: Tensor, calls: list[tuple[AttentionSite, Tensor]]) -> tuple[Tensor, ...]:
    """``d sum(scores) / d A`` per captured call, in one ``torch.autograd.grad``. A returned tensor that is a
    reshaping view of the one the model computed with (``nn.MultiheadAttention`` returns
    ``weights.view(B, heads, q, k)``) is differentiated through its base."""
    weights = [w for _, w in calls]
    bases = [w._base if (w._base is not None and w._base.numel() == w.numel() and w.is_contiguous()
                         and w._base.is_contiguous() and w._base.requires_grad) else None for w in weights]
    wanted = [w for w in weights if w.requires_grad] + [b for b in bases if b is not None]
    if not wanted:
        raise ValueError("lightning_xai: no captured attention probability depends on anything that requires grad "
                         "(the forward ran without autograd).")
    found = dict(zip(map(id, wanted), torch.autograd.grad(scores.sum(), wanted, allow_unused=True)))
    out = []
    for (site, w), base in zip(calls, bases):
        grad = found.get(id(w)) if w.requires_grad else None
        if grad is None and base is not None and found.get(id(base)) is not None:
            grad = found[id(base)].reshape(w.shape)
        if grad is None:
            raise ValueError(expected("attention_modules", "modules whose attention probabilities the explained "
                                      "score depends on", site.name) + " The gradient of the score does not reach them.")
        out.append(grad.detach().float())
    return tuple(out)


def capture_attention(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: int | Tensor | Callable[[Any], Tensor] | None = None,
    *,
    forward_fn: Callable[..., Any] | None = None,
    attention_modules: str | Sequence[str] | Sequence[AttentionSite] | None = None,
    gradients: bool = False,
) -> AttentionCapture:
    """One forward pass recording every attention layer's probabilities; with ``gradients=True`` one
    ``torch.autograd.grad`` of the summed target scores to them.

    Runs inside :func:`~lightning_xai.functional._guard.explanation_mode` (eval mode, grad on, out of inference mode)
    and :func:`eager_attention`; the model's attention implementation, hooks, modes, ``requires_grad``, ``.grad``
    and the RNG are restored afterwards. With ``gradients=True`` every parameter requires grad for the pass (a frozen
    model's probabilities would otherwise not be differentiable), restored afterwards.

    Args:
        model: the model.
        inputs: a tensor or tuple of tensors, batch first.
        target: class indices (an ``int`` or ``(B,)`` tensor) scored as ``output[arange(B), target]``, or a callable
            mapping the output to ``(B,)`` scores; required with ``gradients=True``.
        forward_fn: ``forward_fn(model, *inputs)`` returns the output; default ``model(*inputs)``.
        attention_modules: see :func:`find_attention_modules` (or its sites); ``None`` finds them.
        gradients: also return the scores' gradients to the probabilities.

    Returns:
        An :class:`AttentionCapture`.

    Raises:
        ValueError: when no attention is found or recorded (the message names ``attention_modules=``), for window
            attention, or for bad targets.

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.attn, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)
        ...     def forward(self, x):
        ...         return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))
        >>> cap = capture_attention(Net(), torch.randn(2, 5, 8), 0, gradients=True)
        >>> cap.modules, cap.attentions[0].shape, cap.gradients[0].shape
        (('attn',), torch.Size([2, 2, 5, 5]), torch.Size([2, 2, 5, 5]))
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if not inputs or not isinstance(inputs[0], Tensor):
        raise TypeError(expected("inputs", "a tensor or a tuple of tensors, batch first", type(inputs[0]).__name__
                                 if inputs else inputs))
    batch = inputs[0].shape[0]
    if gradients and target is None:
        raise ValueError(expected("target", "class indices or a callable when gradients are asked for", None))
    checked = None if target is None else check_class_target(target, batch)
    sites = (list(attention_modules) if isinstance(attention_modules, (list, tuple)) and attention_modules
             and all(isinstance(s, AttentionSite) for s in attention_modules)
             else find_attention_modules(model, attention_modules))  # type: ignore[arg-type]
    calls: list[tuple[AttentionSite, Tensor]] = []
    with explanation_mode(model), eager_attention(model), _hooks(sites, calls):
        inputs = tuple(t.detach().clone() if isinstance(t, Tensor) else t for t in inputs)
        if gradients:
            for p in model.parameters():
                if p.is_floating_point() and not p.requires_grad:
                    p.requires_grad_(True)
        with torch.set_grad_enabled(gradients):
            output = model(*inputs) if forward_fn is None else forward_fn(model, *inputs)
            scores = None if checked is None else _scores(output, checked, batch)
        if not calls:
            raise ValueError(expected("attention_modules", "modules that run in the forward pass",
                                      [s.name for s in sites]) + " None of them was called.")
        grads = _gradients(scores, calls) if gradients else None  # type: ignore[arg-type]
    return AttentionCapture(
        attentions=tuple(w.detach().float() for _, w in calls), gradients=grads,
        modules=tuple(s.name for s, _ in calls), output=output.detach() if isinstance(output, Tensor) else output,
        scores=None if scores is None else scores.detach(), kinds=tuple(s.kind for s, _ in calls))
