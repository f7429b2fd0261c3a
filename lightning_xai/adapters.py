"""Batch and model adapters: how a batch becomes model inputs, labels and masks, and how an output becomes scores.

Defaults cover ``(x, y)`` / ``(x, y, mask)`` tuples, dict batches (``pixel_values``, ``input_ids``,
``attention_mask``, ``labels``, ``mask``) and Hugging Face ``ModelOutput`` / dict / tuple outputs. Anything else is
handled by passing importable callables (``batch_to_inputs=``, ``forward_fn=``, ``target=``), by object or by
dotted path (``"my_pkg.my_module.my_function"``), so LightningCLI YAML can name them. The output adapters
(:func:`logits_from_output`, :func:`mean_over_frames`, :func:`ctc_best_path_score`) are written in
``lightning_xai._output_adapters`` and public here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor, nn

from lightning_xai._batch import batch_size_of, concat_batches, move_to, slice_batch
from lightning_xai._checks import expected
from lightning_xai._output_adapters import (  # the output adapters, public here
    ctc_best_path_score,
    frame_logits_error,
    logits_from_output,
    mean_over_frames,
)
from lightning_xai.functional._targets import check_class_bounds

__all__ = [
    "ModelInputs",
    "TargetSpec",
    "default_batch_to_inputs",
    "default_forward_fn",
    "logits_from_output",
    "resolve_callable",
    "resolve_targets",
    "slice_batch",
    "batch_size_of",
    "move_to",
    "concat_batches",
    "ctc_best_path_score",
    "frame_logits_error",
    "mean_over_frames",
]

LABEL_KEYS = ("labels", "label", "targets", "target", "y")
MASK_KEYS = ("mask", "masks", "segmentation", "gt_mask")
TargetSpec = Union[str, int, Callable[..., Tensor]]


@dataclass
class ModelInputs:
    """What the model is called with, plus what the batch says about the truth.

    Args:
        args: positional tensors passed to the model, batch first.
        kwargs: keyword tensors passed to the model (e.g. ``pixel_values``, ``attention_mask``).
        labels: class labels ``(B,)`` when the batch carries them.
        mask: ground-truth localisation masks ``(B, H, W)`` (or ``(B, T, H, W)``) when the batch carries them.

    Example:
        >>> mi = ModelInputs(args=(torch.zeros(2, 3, 4, 4),), labels=torch.tensor([0, 1]))
        >>> mi.batch_size, mi.image_key
        (2, 0)
    """

    args: tuple[Tensor, ...] = ()
    kwargs: dict[str, Tensor] = field(default_factory=dict)
    labels: Tensor | None = None
    mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Number of samples (first dimension of the first tensor input)."""
        for t in (*self.args, *self.kwargs.values()):
            if isinstance(t, Tensor) and t.dim() > 0:
                return int(t.shape[0])
        raise ValueError("ModelInputs holds no tensor with a batch dimension.")

    @property
    def image_key(self) -> int | str | None:
        """Position or key of the first floating input with 4 or 5 dims (an image or a clip), else None."""
        for i, t in enumerate(self.args):
            if isinstance(t, Tensor) and t.is_floating_point() and t.dim() in (4, 5):
                return i
        for k, t in self.kwargs.items():
            if isinstance(t, Tensor) and t.is_floating_point() and t.dim() in (4, 5):
                return k
        return None

    def get(self, key: int | str) -> Tensor:
        """Return the input at position ``key`` (int) or keyword ``key`` (str)."""
        return self.args[key] if isinstance(key, int) else self.kwargs[key]

    def replace(self, key: int | str, value: Tensor) -> ModelInputs:
        """Return a copy with the input at ``key`` replaced by ``value``."""
        args, kwargs = list(self.args), dict(self.kwargs)
        if isinstance(key, int):
            args[key] = value
        else:
            kwargs[key] = value
        return ModelInputs(tuple(args), kwargs, self.labels, self.mask)

    def to(self, device: torch.device | str) -> ModelInputs:
        """Return a copy with every tensor moved to ``device``."""
        return ModelInputs(
            tuple(move_to(a, device) for a in self.args),
            {k: move_to(v, device) for k, v in self.kwargs.items()},
            move_to(self.labels, device),
            move_to(self.mask, device),
        )


def _first_key(batch: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((k for k in keys if k in batch), None)


def default_batch_to_inputs(batch: Any) -> ModelInputs:
    """Split a batch into model inputs, labels and masks.

    Tuples/lists: ``(x,)``, ``(x, y)``, ``(x, y, mask)``. Dicts: label keys (``labels``, ``label``, ``target(s)``,
    ``y``) and mask keys (``mask``, ``masks``, ``segmentation``) are taken out, every other tensor is passed to the
    model by keyword. A bare tensor is the single input.

    Example:
        >>> mi = default_batch_to_inputs({"input_ids": torch.ones(2, 5, dtype=torch.long), "labels": torch.tensor([0, 1])})
        >>> list(mi.kwargs), mi.labels.tolist()
        (['input_ids'], [0, 1])
    """
    if isinstance(batch, Tensor):
        return ModelInputs(args=(batch,))
    if isinstance(batch, Mapping):
        lk, mk = _first_key(batch, LABEL_KEYS), _first_key(batch, MASK_KEYS)
        kwargs = {k: v for k, v in batch.items() if k not in (lk, mk) and isinstance(v, Tensor)}
        return ModelInputs(kwargs=kwargs, labels=batch.get(lk) if lk else None, mask=batch.get(mk) if mk else None)
    if isinstance(batch, (tuple, list)) and len(batch) > 0 and isinstance(batch[0], Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        mask = batch[2] if len(batch) > 2 and isinstance(batch[2], Tensor) else None
        return ModelInputs(args=(batch[0],), labels=labels, mask=mask)
    raise TypeError(
        expected(
            "batch_to_inputs",
            "set for this batch type: the default understands a tensor, an (x, y[, mask]) tuple or a dict of tensors",
            type(batch).__name__,
        )
    )


def default_forward_fn(model: nn.Module, inputs: ModelInputs) -> Any:
    """Call ``model(*inputs.args, **inputs.kwargs)``.

    Example:
        >>> default_forward_fn(nn.Identity(), ModelInputs(args=(torch.ones(1, 2),))).shape
        torch.Size([1, 2])
    """
    return model(*inputs.args, **inputs.kwargs)


def resolve_callable(name: str, value: Any) -> Callable[..., Any] | None:
    """Turn ``None``, a callable or a dotted import path (``"pkg.module.function"``) into a callable.

    Example:
        >>> resolve_callable("forward_fn", "lightning_xai.adapters.default_forward_fn").__name__
        'default_forward_fn'
    """
    if value is None or callable(value):
        return value
    if isinstance(value, str) and "." in value:
        module_name, _, attr = value.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(expected(name, "a callable or an importable dotted path", value) + f" ({err})") from err
        if callable(obj):
            return obj
    raise ValueError(expected(name, "a callable or an importable dotted path like 'pkg.module.function'", value))


def _label_targets(labels: Tensor, logits: Tensor) -> Tensor:
    """The batch's labels as ``(B,)`` class indices of ``logits``: one integer label per sample, in range."""
    n, name = logits.shape[0], "`target` ('label')"
    if labels.numel() != n:
        raise ValueError(
            f"Expected argument {name} to be used with one class label per sample, shape ({n},), but got labels of "
            f"shape {tuple(labels.shape)}. For one-hot, soft or per-pixel labels pass a callable `target` (one score "
            "per sample) or a `batch_to_inputs` that returns class indices."
        )
    labels = labels.reshape(n)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        if labels.dtype == torch.bool or not bool((labels == labels.round()).all()):
            raise ValueError(
                f"Expected argument {name} to be used with integer class labels, but got {labels.dtype} labels "
                f"{labels.tolist()[:8]}."
            )
    labels = labels.long()
    if logits.dim() == 2:
        check_class_bounds(labels, logits.shape[1], name=name, kind="label", where="probe position")
    return labels


def resolve_targets(logits: Tensor, target: TargetSpec, labels: Tensor | None = None) -> Tensor:
    """Class indices to explain, one per sample: ``"pred"`` (argmax), ``"label"`` (from the batch) or a fixed int.

    Raises:
        ValueError: If ``target`` is none of these, ``"label"`` without labels, labels that are not one integer
            class per sample, a label or class index outside the model's classes (the message names the first
            one and its position), or ``logits`` with more than two dimensions (``(batch, frames, vocabulary)``
            from a CTC head: the message says how to set ``output=`` or a callable ``target=``).

    Example:
        >>> resolve_targets(torch.tensor([[0.1, 2.0], [3.0, 0.0]]), "pred").tolist()
        [1, 0]
        >>> resolve_targets(torch.zeros(2, 3), "label", torch.tensor([1, 2])).tolist()
        [1, 2]
    """
    n = logits.shape[0]
    if logits.dim() > 2 and (target in ("pred", "label") or isinstance(target, int)):
        raise frame_logits_error(logits.shape, f"`target={target!r}`", attribution=True)
    if target == "pred":
        if logits.dim() < 2:
            raise ValueError(expected("target", "'pred' only for (batch, classes) outputs; use a callable", "pred"))
        return logits.detach().reshape(n, -1).argmax(dim=1)
    if target == "label":
        if labels is None:
            raise ValueError(
                expected("target", "'label' only when the batch carries labels (see `batch_to_inputs`)", "label")
            )
        return _label_targets(labels.detach(), logits).to(logits.device)
    if isinstance(target, int) and not isinstance(target, bool):
        classes = logits.shape[-1] if logits.dim() >= 2 else 1
        if not 0 <= target < classes:
            raise ValueError(expected("target", f"a class index in [0, {classes - 1}]", target))
        return torch.full((n,), target, dtype=torch.long, device=logits.device)
    raise ValueError(expected("target", "'pred', 'label', an int class index or a callable", target))

