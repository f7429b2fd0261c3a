"""One observed forward for the layer search: what every module returned, in which order, and what the output needs.

Pure torch. :func:`trace` runs the model once on the first sample of every input (cut alike, so an image+text
model gets matching batches), in eval mode with autograd on and the model restored afterwards (observer guard),
and records per module its first call: start and end order, output (the first tensor of a tuple), the output's
version when the module returned, and the input's shape. Attention modules' inputs are remembered so that a norm
can be recognised as "the one feeding the attention". Afterwards one ``torch.autograd.grad`` tells which recorded
outputs the model's output depends on (a Teacher's layers do not matter for the Student's head).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.functional._guard import observer_guard

__all__: list[str] = []


@dataclass
class Record:
    """A module's first call in the traced forward."""

    name: str
    module: nn.Module
    start: int
    end: int = -1
    calls: int = 0
    output: Tensor | None = None
    version: int = 0
    input_shape: tuple[int, ...] | None = None
    depends: bool = True


@dataclass
class Trace:
    """Everything :func:`trace` saw: records by name (in definition order) and the explained sample."""

    records: dict[str, Record]
    sample: Tensor | None
    attention_inputs: list[Tensor] = field(default_factory=list)
    output: Tensor | None = None

    def ran(self) -> list[Record]:
        """Records of modules that ran, in the order their first call ended."""
        return sorted((r for r in self.records.values() if r.calls), key=lambda r: r.end)

    def on_input_path(self, tensor: Tensor) -> bool:
        """Does ``tensor`` depend on the explained input (unknown, so ``True``, when that is no float tensor)?"""
        return self.sample is None or self.upstream(tensor, [self.sample]) == [True]

    def feeds_attention(self, tensor: Tensor) -> bool:
        return any(t is tensor for t in self.attention_inputs)

    def upstream(self, tensor: Tensor, others: list[Tensor]) -> list[bool]:
        """For each of ``others``: does ``tensor`` depend on it (sequential, not a parallel branch)? Unknown
        (``True``) for those that do not require grad."""
        wanted = [o for o in others if o.requires_grad]
        if not wanted:
            return [True] * len(others)
        if not tensor.requires_grad:  # it cannot depend on anything that requires grad
            return [not o.requires_grad for o in others]
        grads = iter(torch.autograd.grad(tensor.float().sum(), wanted, allow_unused=True, retain_graph=True))
        return [next(grads) is not None if o.requires_grad else True for o in others]


def first_sample(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """Slice the tensors that share the batch size of the first batched input to one sample: all alike."""
    batch = next((x.shape[0] for x in inputs if isinstance(x, Tensor) and x.ndim > 0), None)
    return tuple(x[:1] if isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == batch else x for x in inputs)


def is_attention(module: nn.Module) -> bool:
    """An attention module, by type: ``nn.MultiheadAttention`` or a class named ``...Attention...``."""
    return isinstance(module, nn.MultiheadAttention) or "attention" in type(module).__name__.lower()


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Mapping):
        logits = value.get("logits")
        return logits if isinstance(logits, Tensor) else next((v for v in value.values() if isinstance(v, Tensor)),
                                                              None)
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, Tensor)), None)
    logits = getattr(value, "logits", None)
    return logits if isinstance(logits, Tensor) else None


def trace(model: nn.Module, inputs: tuple[Any, ...], forward_fn: Callable[..., Any] | None,
          input_index: int = 0) -> Trace:
    """Run one forward on the first sample of every input and record every module's first call.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> t = trace(net, (torch.zeros(2, 3, 8, 8),), None)
        >>> [(r.name, tuple(r.output.shape)) for r in t.ran()]
        [('0', (1, 4, 6, 6)), ('1', (1, 4, 6, 6)), ('2', (1, 4, 1, 1)), ('3', (1, 4))]
    """
    records = {name: Record(name, module, -1) for name, module in model.named_modules() if name}
    clock = iter(range(1 << 62))
    found = Trace(records, None)

    def pre_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> None:
            record = records[name]
            record.calls += 1
            if record.calls == 1:
                record.start = next(clock)
                first = _first_tensor(args) if args else None
                first = first if first is not None else kwargs.get("hidden_states", _first_tensor(kwargs))
                record.input_shape = tuple(first.shape) if isinstance(first, Tensor) else None
                if is_attention(module) and isinstance(first, Tensor):
                    found.attention_inputs.append(first)

        return hook

    def hook(name: str) -> Callable[..., None]:
        def after(module: nn.Module, args: Any, output: Any) -> None:
            record = records[name]
            if record.end < 0:
                record.end = next(clock)
                record.output = output if isinstance(output, Tensor) else _first_tensor(output)
                record.version = record.output._version if record.output is not None else 0

        return after

    handles = []
    with observer_guard(model):
        try:
            for name, record in records.items():
                handles.append(record.module.register_forward_pre_hook(pre_hook(name), with_kwargs=True))
                handles.append(record.module.register_forward_hook(hook(name)))
            model.eval()
            with torch.inference_mode(False), torch.enable_grad():
                sample = [x.clone() if isinstance(x, Tensor) and x.is_inference() else x for x in first_sample(inputs)]
                explained = sample[input_index] if -len(sample) <= input_index < len(sample) else None
                if isinstance(explained, Tensor) and explained.is_floating_point():
                    found.sample = explained.detach().requires_grad_(True)  # frozen models still get a graph
                    sample[input_index] = found.sample.clone()
                result = model(*sample) if forward_fn is None else forward_fn(model, *sample)
        finally:
            for handle in handles:
                handle.remove()
    found.output = _first_tensor(result)
    _dependencies(found)
    return found


def _dependencies(found: Trace) -> None:
    """Mark the recorded float outputs (3-D and up) that the model's output does not depend on."""
    out = found.output
    if out is None or not out.requires_grad:
        return
    wanted: dict[int, Tensor] = {}
    for record in found.records.values():
        t = record.output
        if t is not None and t.is_floating_point() and t.ndim >= 3:
            wanted.setdefault(id(t), t)
    tensors = [t for t in wanted.values() if t.requires_grad]
    grads = torch.autograd.grad(out.float().sum(), tensors, allow_unused=True, retain_graph=True) if tensors else ()
    live = {id(t) for t, g in zip(tensors, grads) if g is not None}
    for record in found.records.values():
        t = record.output
        if t is not None and id(t) in wanted:
            record.depends = id(t) in live
