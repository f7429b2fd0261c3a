"""Batch and model adapters: how a batch becomes model inputs, labels and masks, and how an output becomes scores.

Defaults cover ``(x, y)`` / ``(x, y, mask)`` tuples, dict batches (``pixel_values``, ``input_ids``,
``attention_mask``, ``labels``, ``mask``) and Hugging Face ``ModelOutput`` / dict / tuple outputs. Anything else is
handled by passing importable callables (``batch_to_inputs=``, ``forward_fn=``, ``target=``), by object or by
dotted path (``"my_pkg.my_module.my_function"``), so LightningCLI YAML can name them.
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


def logits_from_output(output: Any, key: str | int | None = None) -> Tensor:
    """Pick the logits-like tensor out of a model output.

    A tensor is returned as is; a ``ModelOutput``/dict gives ``output[key]``, else the first of ``logits``,
    ``logits_per_image`` (CLIP: each image scored against the given texts, so the texts are the classes),
    ``logit``, ``scores``, ``output``, else its only tensor; a tuple/list gives ``output[key]`` or its first
    tensor. (CLIP's ``logits_per_text`` scores texts against images: pick it with ``output="logits_per_text"``.)
    A CTC head's ``logits`` (``Wav2Vec2ForCTC``: ``(batch, frames, vocabulary)``) are returned as they are; the
    callbacks refuse them with their shape unless ``output=`` reduces them to ``(batch, classes)`` (e.g.
    :func:`mean_over_frames`) or a callable ``target=`` scores them (e.g. :func:`ctc_best_path_score`).

    Example:
        >>> logits_from_output({"loss": torch.tensor(0.), "logits": torch.ones(2, 3)}).shape
        torch.Size([2, 3])
        >>> logits_from_output({"logits_per_image": torch.ones(2, 4), "logits_per_text": torch.ones(4, 2)}).shape
        torch.Size([2, 4])
    """
    if isinstance(output, Tensor) and key is None:
        return output
    if isinstance(output, Mapping) or hasattr(output, "keys"):
        keys = list(output.keys())
        if key is not None:
            if key not in keys:
                raise ValueError(expected("output", f"one of the model's output keys {keys}", key))
            return output[key]
        for k in ("logits", "logits_per_image", "logit", "scores", "output"):
            if k in keys and isinstance(output[k], Tensor):
                return output[k]
        tensors = [k for k in keys if isinstance(output[k], Tensor) and output[k].dim() >= 1]
        if len(tensors) == 1:
            return output[tensors[0]]
        raise ValueError(
            "The model output is a mapping without a `logits` entry (keys: "
            f"{keys}). Set `output=` to the key to explain, or pass `forward_fn=` returning a (batch, classes) tensor."
        )
    if isinstance(output, (tuple, list)):
        if isinstance(key, int):
            return output[key]
        for item in output:
            if isinstance(item, Tensor):
                return item
    raise ValueError(
        f"Could not find a logits-like tensor in the model output of type {type(output).__name__}. "
        "Set `output=` (a key or index) or pass `forward_fn=` returning a (batch, classes) tensor."
    )


def mean_over_frames(output: Any) -> Tensor:
    """Class scores of a frame-wise head: the mean of ``(batch, frames, classes)`` logits over frames.

    For ``output=`` when a model scores every frame (a CTC or frame-tagging head) and the callbacks should see one
    ``(batch, classes)`` row per sample; from YAML: ``output: lightning_xai.adapters.mean_over_frames``.

    Example:
        >>> mean_over_frames({"logits": torch.arange(12.).view(1, 4, 3)}).tolist()
        [[4.5, 5.5, 6.5]]
    """
    logits = logits_from_output(output)
    if logits.dim() != 3:
        raise ValueError(expected("output", "(batch, frames, classes) logits for mean_over_frames",
                                  f"a tensor of shape {tuple(logits.shape)}"))
    return logits.mean(1)


def ctc_best_path_score(output: Any) -> Tensor:
    """One score per sample of a CTC head: the log-probability of its best (greedy) path, summed over frames.

    For ``target=`` of the attribution callbacks on ``(batch, frames, vocabulary)`` logits (e.g.
    ``Wav2Vec2ForCTC``): the explanation says which input parts made the model sure of the transcript it reads.
    From YAML: ``target: lightning_xai.adapters.ctc_best_path_score``.

    Example:
        >>> out = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75]]]))
        >>> round(float(ctc_best_path_score({"logits": out})), 4) == round(float(torch.log(torch.tensor(0.375))), 4)
        True
    """
    logits = logits_from_output(output)
    if logits.dim() != 3:
        raise ValueError(expected("target", "a callable for (batch, frames, vocabulary) logits in "
                                  "ctc_best_path_score", f"logits of shape {tuple(logits.shape)}"))
    return logits.float().log_softmax(-1).amax(-1).sum(1)


def frame_logits_error(shape: Sequence[int], owner: str, attribution: bool) -> ValueError:
    """The error for ``(batch, frames, vocabulary)`` outputs where ``(batch, classes)`` are needed, saying what to set.

    ``owner`` names who needs the scores (a callback, or an argument such as ``target``); ``attribution`` adds the
    ``target=`` way out (a callable scoring the raw output), which only the attribution callbacks have.

    Example:
        >>> msg = str(frame_logits_error((2, 49, 32), "CalibrationCallback", attribution=False))
        >>> "(2, 49, 32)" in msg and "`output=`" in msg and "`target=`" not in msg
        True
    """
    if len(shape) == 3:
        kind = "one row per frame, like a CTC or frame-tagging head"
        reduce = "e.g. `output=\"lightning_xai.adapters.mean_over_frames\"` (the mean over frames)"
    else:
        kind = "scores per position, like a segmentation head"
        reduce = "e.g. `output=lambda out: out.logits.flatten(2).mean(-1)` (the mean over positions)"
    fix = f"Set `output=` to a callable (or dotted path) mapping the model output to (batch, classes), {reduce}"
    if attribution:
        fix += (", or `target=` to a callable (or dotted path) returning one score per sample from the model output, "
                "e.g. `target=\"lightning_xai.adapters.ctc_best_path_score\"` (the log-probability of the best CTC "
                "path: the sum over frames of each frame's top log-probability) or "
                "`target=lambda out: out.logits[:, 0].max(-1).values` (the top token's logit at frame 0)")
    return ValueError(f"{owner} needs (batch, classes) scores, but the model output (picked by `output=`) has shape "
                      f"{tuple(shape)}: {kind}. {fix}.")


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

