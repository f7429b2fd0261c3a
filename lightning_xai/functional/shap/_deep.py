"""``shap.DeepExplainer`` (DeepLIFT-SHAP) on the input contract of :func:`expected_gradients`, with the layers
it cannot handle named before it runs (see :mod:`._deep_check`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_xai._checks import check_positive_int, expected
from lightning_xai.functional.shap._deep_check import describe, unsupported_layers
from lightning_xai.functional.shap._engine import forward_values
from lightning_xai.functional.shap._inputs import FLOAT, TOKEN, Prepared, Target, check_inputs, prepare
from lightning_xai.functional.shap._reference import ScoreModel
from lightning_xai.functional.shap._result import ShapResult, _check_generator, _result
from lightning_xai.functional.shap._tokens import shap_setup

__all__ = ["shap_deep"]

_QUIET = (  # shap's own notice for every unknown leaf (named once, in our warning), and torch's notice for
    "unrecognized nn.Module",  # the hooked embedding layer, whose integer input needs no gradient
    "Full backward hook is firing when gradients are computed with respect to module outputs",
)


def _check_layers(wrapper: ScoreModel, prep: Prepared, strict: bool) -> list[str]:
    def run() -> None:
        wrapper.probe = 0
        wrapper(*[torch.cat([x[:1], bg[:1]]).requires_grad_(True) for x, bg in zip(prep.x, prep.bg)])

    listing = unsupported_layers(wrapper, prep.model, run, None if prep.swap is None else prep.swap.layer)
    if listing and strict:
        allowed = "a model made only of layers shap.DeepExplainer handles (strict=True)"
        raise ValueError(expected("model", allowed, describe(listing)) + " Use engine='gradient'.")
    if listing:
        message = f"shap.DeepExplainer does not handle these layers: {describe(listing)}; its values will "
        warnings.warn(message + "not add up; use engine='gradient'.", UserWarning, stacklevel=3)
    return listing


def _deep_values(
    wrapper: ScoreModel, prep: Prepared, refs: int, max_batch: int, generator: torch.Generator
) -> list[Tensor]:
    """Per explained input ``(B, ...)``: the mean over ``refs`` references of shap's DeepLIFT values."""
    import shap

    n, chunk = prep.n_background, max(1, max_batch // 2)  # shap runs 2 rows (probe, reference) per reference

    def explainers(rows: Tensor) -> list[tuple[int, Any]]:
        parts = [rows[i : i + chunk] for i in range(0, len(rows), chunk)]
        return [(len(p), shap.DeepExplainer(wrapper, [bg[p.to(bg.device)] for bg in prep.bg])) for p in parts]

    shared = explainers(torch.arange(n)) if refs == n else None
    out: list[list[Tensor]] = [[] for _ in prep.x]
    for b in range(prep.batch):
        wrapper.probe = b
        parts = shared or explainers(torch.randperm(n, generator=generator)[:refs].sort().values)
        totals = [torch.zeros(x.shape[1:], dtype=torch.float64) for x in prep.x]
        for size, explainer in parts:
            phis = explainer.shap_values([x[b : b + 1] for x in prep.x], check_additivity=False)
            for total, phi in zip(totals, phis if isinstance(phis, list) else [phis]):
                total += size * torch.from_numpy(np.asarray(phi, dtype=np.float64)[0, ..., 0])
        for i, total in enumerate(totals):
            out[i].append((total / refs)[None])
    return [torch.cat(v) for v in out]


def shap_deep(
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Tensor | tuple[Tensor | None, ...],
    target: Target,
    nsamples: int | None = None,
    *,
    forward_fn: Callable[..., Any] | None = None,
    max_batch: int = 64,
    generator: torch.Generator | None = None,
    embedding_layer: nn.Module | str | None = "auto",
    strict: bool = False,
) -> ShapResult:
    """SHAP values by ``shap.DeepExplainer`` (DeepLIFT-SHAP), in the layout of :func:`expected_gradients`.

    shap sees the same wrapper as :func:`shap_gradient_reference` (``module(*explained) -> (rows, 1)``; token
    inputs as embeddings, substituted by the embedding hook; other inputs passed through). DeepLIFT's rescale
    rule is exactly additive, ``sum(phi) = f(x) - E f(references)``, but only through the layers shap knows.
    Before running, one traced forward pass finds every layer it does not handle (unknown leaves such as
    ``LayerNorm`` or ``GELUActivation``, functional nonlinearities such as ``torch.relu`` in a ``forward``,
    products of activations as in attention, a ``ReLU`` module called twice; see
    :mod:`lightning_xai.functional.shap._deep_check`) and names them by dotted module name in a
    ``UserWarning``, or a ``ValueError`` with ``strict=True``. shap runs with ``check_additivity=False``;
    the additivity error is reported as ``completeness_error``/``relative_error``.

    Base value: ``E f(background)``, forward passes over every background row (as the other engines).
    Deterministic (``generator`` only draws references when ``nsamples`` is smaller than the background).

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors, batch first (as in :func:`expected_gradients`).
        baselines: The background, same structure as ``inputs``.
        target: Class indices or a callable, as in :func:`expected_gradients`.
        nsamples: References per probe: ``None`` (default) every background row; fewer: that many rows,
            drawn without replacement (the error then includes their sampling error).
        forward_fn: ``forward_fn(model, *inputs)`` returns the output.
        max_batch: Most rows per forward/backward: shap runs a probe row and a reference row per reference;
            the references are split into chunks whose values are averaged (exact: DeepLIFT-SHAP is a mean
            over references).
        generator: Draws the references; default a fresh one seeded 0.
        embedding_layer: As in :func:`expected_gradients`.
        strict: Raise instead of warning when the model has layers shap does not handle.

    Returns:
        A :class:`ShapResult` (``converged`` is ``None``); ``nsamples`` holds the references per probe.

    Raises:
        ValueError: For bad shapes or values; with ``strict=True``, for layers shap does not handle.
        TypeError: For arguments of the wrong type.
        RuntimeError: If shap itself fails (the message names the layers it does not handle).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> result = shap_deep(net, torch.randn(2, 3), torch.randn(8, 3), 1)
        >>> result.values[0].shape, bool((result.relative_error < 1e-4).all())
        (torch.Size([2, 3]), True)
    """
    inputs = check_inputs(inputs)
    if nsamples is not None:
        check_positive_int("nsamples", nsamples)
    check_positive_int("max_batch", max_batch)
    if not isinstance(strict, bool):
        raise TypeError(expected("strict", "a bool", strict))
    gen = _check_generator(generator)
    with shap_setup(model, embedding_layer, freeze=True) as (swap, explicit):
        prep = prepare(model, inputs, baselines, target, forward_fn, swap, explicit)
        wrapper = ScoreModel(prep)
        listing = _check_layers(wrapper, prep, strict)
        refs = prep.n_background if nsamples is None else min(nsamples, prep.n_background)
        try:
            with warnings.catch_warnings():
                for message in _QUIET:
                    warnings.filterwarnings("ignore", message=message)
                phis = _deep_values(wrapper, prep, refs, max_batch, gen)
        except (RuntimeError, AssertionError, ValueError) as err:
            layers = f" Layers it does not handle: {describe(listing)}." if listing else ""
            raise RuntimeError(
                f"shap.DeepExplainer failed on {type(model).__name__}: {err}.{layers} Use engine='gradient'."
            ) from err
        roles = [role for role in prep.roles if role in (FLOAT, TOKEN)]
        phis = [phi.sum(-1) if role == TOKEN else phi for phi, role in zip(phis, roles)]
        fx, fbg = forward_values(prep, max_batch)
    return _result(prep, phis, torch.full((prep.batch,), refs), fx, fbg, None)
