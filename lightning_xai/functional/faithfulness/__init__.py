"""Perturbation faithfulness of any attribution (SHAP values, Grad-CAM maps, gradients): deletion and insertion.

Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models" (BMVC 2018). Features are
ranked by decreasing attribution. The *deletion* curve replaces the top ``k / steps`` of them by a baseline and
records the target class score at each step; the *insertion* curve starts from the baseline and puts the most
important features back first. The areas under the curves (trapezoidal, over the fraction of features changed)
read: **lower deletion AUC and higher insertion AUC = more faithful**. Compare attributions of the same model,
inputs, baseline and score only; the areas are not comparable across models.

Attributions may be shaped like the inputs, or be a map without the channel axis (``(B, *spatial)`` or
``(B, 1, *spatial)``) that moves all channels of a pixel together; a map of another spatial size (a 7x7
Grad-CAM) is first resized to the input's, bilinearly (``align_corners=False``; linear / trilinear for 1-D / 3-D
inputs). Tabular ``(B, F)`` float inputs take ``(B, F)`` attributions. Out of scope: token ids (perturb their
embeddings with a ``forward_fn`` that embeds, or explain at the embedding layer), tuples of inputs.

Pure torch. Every perturbed row is evaluated in chunks of ``max_batch`` under ``torch.no_grad()`` inside
:func:`~lightning_xai.functional.explanation_mode` (eval mode; flags, ``requires_grad``, ``.grad``, hooks and
RNG restored); nothing is random.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, check_positive_int, expected
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional._outputs import model_device
from lightning_xai.functional.faithfulness._steps import (
    SCORES,
    baseline_of,
    check_inputs,
    check_target,
    feature_ranks,
    perturbed_logits,
)

__all__ = ["deletion_auc", "deletion_curve", "insertion_auc", "insertion_curve"]

Baseline = str | Tensor


def _curve(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: int | Tensor | None,
    steps: int,
    baseline: Baseline,
    score: str,
    forward_fn: Callable[..., Any] | None,
    max_batch: int,
    insert: bool,
) -> tuple[Tensor, Tensor]:
    inputs = check_inputs(inputs)
    check_positive_int("steps", steps)
    check_positive_int("max_batch", max_batch)
    check_choice("score", score, SCORES)
    wanted = check_target(target, inputs.shape[0])
    if forward_fn is not None and not callable(forward_fn):
        raise TypeError(expected("forward_fn", "a callable forward_fn(model, inputs) or None", forward_fn))
    with explanation_mode(model), torch.no_grad():
        x = inputs.detach().to(model_device(model, inputs.device))
        ranks = feature_ranks(attributions, x)
        base = baseline_of(baseline, x)
        n_features = ranks[0].numel()
        counts = torch.arange(steps + 1, device=x.device) * n_features // steps
        logits = perturbed_logits(model, forward_fn, x, base, ranks, counts, insert, max_batch)
    classes = logits.shape[-1]
    if wanted is None:
        wanted = logits[:, -1 if insert else 0].argmax(-1)  # the unperturbed input: all kept / all inserted
    elif bool((wanted >= classes).any()):
        raise ValueError(expected("target", f"class indices below the {classes} classes", wanted.tolist()))
    values = logits.softmax(-1) if score == "probability" else logits
    index = wanted.to(values.device).view(-1, 1, 1).expand(-1, steps + 1, 1)
    scores = values.gather(2, index).squeeze(2).to(inputs.device)
    return counts.to(inputs.device, scores.dtype) / n_features, scores


def deletion_curve(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: int | Tensor | None,
    *,
    steps: int = 20,
    baseline: Baseline = "zero",
    score: str = "probability",
    forward_fn: Callable[..., Any] | None = None,
    max_batch: int = 64,
) -> tuple[Tensor, Tensor]:
    """Deletion curve: the target score as the most important features are replaced by the baseline.

    Step ``k`` (``0 .. steps``) replaces the ``k * N // steps`` highest-ranked of a sample's ``N`` features
    (ties: the earlier position first, a stable sort); step 0 is the input itself, step ``steps`` the baseline.

    Args:
        model: The classifier; ``model(x)`` (or ``forward_fn(model, x)``) returns ``(rows, classes)`` logits (a
            tensor, a ``.logits`` attribute or the first item of a tuple).
        inputs: A floating tensor, batch first: ``(B, F)`` or ``(B, C, *spatial)``.
        attributions: Shaped like ``inputs``, or ``(B, *spatial)`` / ``(B, 1, *spatial)`` (one value per pixel,
            all channels together) or ``(B, C, *spatial)`` of another spatial size (resized bilinearly).
        target: The class scored: an ``int``, a ``(B,)`` integer tensor, or ``None`` for the class predicted on
            the unperturbed input.
        steps: Number of steps; each removes about ``N / steps`` features.
        baseline: What replaces a feature: ``"zero"``; ``"mean"`` (each sample's mean per channel over its
            spatial axes, or over its features for ``(B, F)``); ``"blur"`` (a fixed Gaussian blur along the
            spatial axes: RISE's 11 taps of sigma 5 pixels, edges replicated); or a tensor that broadcasts to
            ``inputs``.
        score: ``"probability"`` (softmax of the logits, RISE's choice) or ``"logit"``.
        forward_fn: ``forward_fn(model, x)`` returns the output; default ``model(x)``.
        max_batch: Most rows per forward; the ``B * (steps + 1)`` rows are evaluated in chunks of this size.

    Returns:
        ``(fractions, scores)``: ``(steps + 1,)`` fractions of the features replaced (exactly
        ``(k * N // steps) / N``) and ``(B, steps + 1)`` target scores, on ``inputs``' device.

    Raises:
        ValueError: For bad shapes or values (``steps`` < 1, an unknown ``baseline``, ``target`` out of range).
        TypeError: For arguments of the wrong type (integer ``inputs``, a model that does not return logits).

    Example:
        >>> net = nn.Linear(3, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
        >>> x = torch.ones(1, 3)
        >>> fractions, scores = deletion_curve(net, x, net.weight[:1] * x, 0, steps=3, score="logit")
        >>> fractions, scores  # the logit falls by the contributions 3, 2, 1
        (tensor([0.0000, 0.3333, 0.6667, 1.0000]), tensor([[6., 3., 1., 0.]]))
    """
    return _curve(model, inputs, attributions, target, steps, baseline, score, forward_fn, max_batch, False)


def insertion_curve(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: int | Tensor | None,
    *,
    steps: int = 20,
    baseline: Baseline = "zero",
    score: str = "probability",
    forward_fn: Callable[..., Any] | None = None,
    max_batch: int = 64,
) -> tuple[Tensor, Tensor]:
    """Insertion curve: the target score as the most important features are put back into the baseline.

    Step ``k`` keeps the ``k * N // steps`` highest-ranked features of the input and the baseline elsewhere;
    step 0 is the baseline, step ``steps`` the input. Arguments and returns as in :func:`deletion_curve`
    (``fractions`` are then the fractions inserted). RISE inserts into ``baseline="blur"`` (images only).

    Example:
        >>> net = nn.Linear(3, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
        >>> x = torch.ones(1, 3)
        >>> insertion_curve(net, x, net.weight[:1] * x, 0, steps=3, score="logit")[1]
        tensor([[0., 3., 5., 6.]])
    """
    return _curve(model, inputs, attributions, target, steps, baseline, score, forward_fn, max_batch, True)


def deletion_auc(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: int | Tensor | None,
    *,
    steps: int = 20,
    baseline: Baseline = "zero",
    score: str = "probability",
    forward_fn: Callable[..., Any] | None = None,
    max_batch: int = 64,
) -> Tensor:
    """Area under :func:`deletion_curve` per sample, ``(B,)``: ``torch.trapezoid(scores, fractions)``. Lower is
    more faithful (the score falls as soon as the features said to matter are removed).

    Example:
        >>> net = nn.Linear(3, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
        >>> x = torch.ones(2, 3)
        >>> attributions = torch.stack([net.weight[0], -net.weight[0]])  # right, then reversed
        >>> deletion_auc(net, x, attributions, 0, steps=3, score="logit")
        tensor([2.3333, 3.6667])
    """
    fractions, scores = _curve(
        model, inputs, attributions, target, steps, baseline, score, forward_fn, max_batch, False
    )
    return torch.trapezoid(scores, fractions, dim=-1)


def insertion_auc(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: int | Tensor | None,
    *,
    steps: int = 20,
    baseline: Baseline = "zero",
    score: str = "probability",
    forward_fn: Callable[..., Any] | None = None,
    max_batch: int = 64,
) -> Tensor:
    """Area under :func:`insertion_curve` per sample, ``(B,)``: ``torch.trapezoid(scores, fractions)``. Higher is
    more faithful (the score recovers as soon as the features said to matter are back).

    Example:
        >>> net = nn.Linear(3, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
        >>> x = torch.ones(2, 3)
        >>> attributions = torch.stack([net.weight[0], -net.weight[0]])  # right, then reversed
        >>> insertion_auc(net, x, attributions, 0, steps=3, score="logit")
        tensor([3.6667, 2.3333])
    """
    fractions, scores = _curve(
        model, inputs, attributions, target, steps, baseline, score, forward_fn, max_batch, True
    )
    return torch.trapezoid(scores, fractions, dim=-1)
