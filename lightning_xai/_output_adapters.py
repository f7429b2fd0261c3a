"""Output adapters: how a model output becomes scores, and the error for frame-wise outputs.

:func:`logits_from_output` picks the logits-like tensor out of a tensor, ``ModelOutput``, dict or tuple;
:func:`mean_over_frames` and :func:`ctc_best_path_score` reduce frame-wise heads (CTC, frame tagging) to one
row or one score per sample; :func:`frame_logits_error` says what to set when an output has too many
dimensions.
Public through :mod:`lightning_xai.adapters` (``output: lightning_xai.adapters.mean_over_frames`` in YAML).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch  # noqa: F401  (the docstring examples use it)
from torch import Tensor

from lightning_xai._checks import expected

__all__ = ["ctc_best_path_score", "frame_logits_error", "logits_from_output", "mean_over_frames"]


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
