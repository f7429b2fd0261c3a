"""CalibrationCallback's view of its predictions: where they come from, and errors worded for its own arguments.

The functional calibration API names its argument ``preds``; a callback user never wrote ``preds`` but ``output=``
(which head of the model output), ``task=`` or ``source=``, so the shape checks that a user can fail are made here,
before the functional update, and name those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.adapters import frame_logits_error

__all__ = ["check_predictions", "step_predictions"]

_STEP_KEYS = ("logits", "preds", "probs")


def step_predictions(outputs: Any, batch_size: int, source: str) -> Tensor | None:
    """The predictions ``validation_step`` returned, or ``None`` when the callback should run the model itself.

    With ``source="auto"`` only one row (``(batch,)``) or one vector (``(batch, classes)``) per sample is taken, so
    frame-wise logits fall through to the forward pass, where ``output=`` can reduce them.

    Raises:
        ValueError: With ``source="outputs"``, when ``validation_step`` returned no logits of the batch's size, or
            logits that are not ``(batch,)`` or ``(batch, classes)``.

    Example:
        >>> import torch
        >>> step_predictions({"loss": torch.tensor(1.0), "logits": torch.zeros(4, 3)}, 4, "auto").shape
        torch.Size([4, 3])
        >>> step_predictions(torch.zeros(4, 9, 3), 4, "auto") is None  # frame-wise: run the model, apply `output=`
        True
    """
    if source == "forward":
        return None
    found = outputs if isinstance(outputs, Tensor) else None
    if isinstance(outputs, Mapping):
        found = next((outputs[k] for k in _STEP_KEYS if isinstance(outputs.get(k), Tensor)), None)
    if found is not None and found.dim() >= 1 and found.shape[0] == batch_size:
        if found.dim() <= 2:
            return found.detach()
        if source == "outputs":
            raise ValueError(expected(
                "source", "'forward' (with `output=` mapping the model output to (batch, classes), e.g. "
                "`output=\"lightning_xai.adapters.mean_over_frames\"`) when validation_step returns frame-wise "
                f"logits of shape {tuple(found.shape)}, or validation_step should return (batch, classes) logits",
                source))
    if source == "outputs":
        raise ValueError("CalibrationCallback(source='outputs') needs validation_step to return the logits "
                         "(a tensor or a dict with 'logits'); use source='forward' to run the model instead.")
    return None


def check_predictions(preds: Tensor, task: str) -> Tensor:
    """Check the shape of a batch of predictions against ``task`` and return them, ``(batch, 1)`` as ``(batch,)``.

    Raises:
        ValueError: For predictions that are not one score or one row of scores per sample (naming ``output=``,
            with the shape seen), and for a ``task`` that the shape contradicts (naming ``task``).
        TypeError: For predictions that are not floating point.

    Example:
        >>> import torch
        >>> check_predictions(torch.zeros(4, 1), "auto").shape
        torch.Size([4])
        >>> try:
        ...     check_predictions(torch.zeros(4, 9, 3), "auto")
        ... except ValueError as err:
        ...     print("(4, 9, 3)" in str(err), "lightning_xai.adapters.mean_over_frames" in str(err))
        True True
    """
    shape = tuple(preds.shape)
    if preds.dim() > 2:
        raise frame_logits_error(shape, "CalibrationCallback", attribution=False)
    if preds.dim() == 0:
        raise ValueError(expected("output", "a head with one score or one row of class scores per sample, (batch,) "
                                  "or (batch, classes), not a scalar such as a loss", shape))
    if not preds.is_floating_point():
        raise TypeError(expected("output", "a head of floating-point logits or probabilities", preds.dtype))
    if preds.dim() == 2 and shape[1] == 1:
        preds = preds[:, 0]
    if task == "binary" and preds.dim() == 2:
        raise ValueError(expected("task", f"'auto', 'multiclass' or 'multilabel' for scores of shape {shape} (or "
                                  "`output=` a head with one score per sample)", task))
    if task in ("multiclass", "multilabel") and preds.dim() == 1:
        raise ValueError(expected("output", f"a head of (batch, classes) scores with at least 2 classes for "
                                  f"task={task!r}", shape))
    return preds
