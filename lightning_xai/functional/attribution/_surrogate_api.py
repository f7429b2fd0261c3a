"""LIME and Kernel SHAP on the input contract of :func:`~lightning_xai.functional.attribution.attribute`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.functional.attribution._feature_mask import FeatureMask
from lightning_xai.functional.attribution._features import superpixels
from lightning_xai.functional.attribution._result import AttributionResult
from lightning_xai.functional.attribution._surrogate import surrogate

__all__ = ["kernel_shap", "lime", "superpixels"]


def lime(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: Tensor | Callable[[Any], Tensor],
    *,
    n_samples: int = 25,
    alpha: float = 0.01,
    kernel_width: float = 1.0,
    n_segments: int = 50,
    compactness: float | None = None,
    patch: tuple[int, int] | None = None,
    mask_token_id: int | None = None,
    baseline: Any = 0.0,
    generator: torch.Generator | None = None,
    forward_fn: Callable[..., Any] | None = None,
    background: tuple[Any, ...] | None = None,
    kinds: tuple[str, ...] | None = None,
    layouts: tuple[str | None, ...] | None = None,
    embedding_layer: nn.Module | str | None = "auto",
    max_batch: int = 128,
    blur_sigma: float | None = None,
    names: tuple[str, ...] | None = None,
    feature_mask: FeatureMask = None,
) -> AttributionResult:
    """LIME (captum ``Lime``, its defaults) over interpretable features, per probe.

    Features: SLIC superpixels of images (:func:`superpixels`, every channel), time-frequency patches of
    spectrograms and per-frame patches of clips (an eighth of each side, or ``patch``), tokens (positions holding
    the embedding's ``padding_idx`` are not features and get 0), tabular elements; numbered jointly over every
    explained input. ``n_samples`` binary samples per probe keep each feature with probability 1/2 (drawn from
    ``generator``, never the global RNG); a dropped feature takes ``baseline`` (tokens: the embedding of
    ``mask_token_id``). Each sample is weighted by ``exp(-d^2 / (2 kernel_width^2))``, ``d`` the cosine distance
    between the input and the perturbed input, and ``Lasso(alpha)`` with an intercept (captum's ``SkLearnLasso``)
    is fitted to the target score: each element carries its feature's coefficient.

    Args:
        model, inputs, target, forward_fn, background, kinds, layouts, embedding_layer, max_batch, blur_sigma: As
            in :func:`~lightning_xai.functional.attribution.attribute` (``baseline``: ``0.0``, a number,
            ``"zeros"``, ``"blur"``, ``"mean"`` or tensors).
        n_samples: Perturbed samples per probe (captum's default 25; unstable between seeds: the ``lime``
            explainer defaults to 1000 over 25 superpixels, see :mod:`lightning_xai.explainers.lime`).
        alpha: The Lasso's L1 weight (captum's 0.01; 0: weighted least squares, the explainer's default).
        kernel_width: Width of the exponential similarity kernel (captum's 1.0).
        n_segments, compactness: SLIC's arguments (compactness: 10 for RGB, which SLIC compares in CIELAB, else 0.1;
            the image is rescaled to [0, 1] first).
        patch: ``(h, w)`` of spectrogram and clip patches.
        mask_token_id: The id of a dropped token (default the embedding's ``padding_idx``, else 0).
        generator: The sampling generator (default: seeded with 0).
        names: Input names for error messages.
        feature_mask: The interpretable features instead of the default ones (captum's ``feature_mask``): an integer
            tensor broadcastable to the input (token inputs: to the ids ``(B, L)``, padding then a feature like any
            other; batch dim 1 or B), equal ids forming one feature (across inputs too); several explained inputs:
            a tuple of one per explained input or a dict by input position (``None``: that input's default
            features). At least 2 features per probe.

    Returns:
        An :class:`AttributionResult`: ``base_values`` is ``f`` with every feature off.

    Raises:
        ValueError: For a probe with fewer than 2 features (naming the inputs, their kinds and ``n_segments``),
            and bad arguments.

    Example:
        >>> net, x = nn.Linear(4, 2), torch.rand(2, 4)
        >>> r = lime(net, x, torch.tensor([0, 1]), n_samples=64, alpha=0.0)  # a linear model: exact
        >>> bool(torch.allclose(r.values[0], net.weight.detach()[[0, 1]] * x, atol=1e-4))
        True
    """
    values, fx, off, _ = surrogate(
        "lime", model, inputs, target, forward_fn=forward_fn, baseline=baseline, background=background, kinds=kinds,
        layouts=layouts, embedding_layer=embedding_layer, n_samples=n_samples, n_segments=n_segments,
        compactness=compactness, patch=patch, mask_token_id=mask_token_id, alpha=alpha, kernel_width=kernel_width,
        generator=generator, max_batch=max_batch, blur_sigma=blur_sigma, names=names, feature_mask=feature_mask)
    return AttributionResult(values, fx, off)


def kernel_shap(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: Tensor | Callable[[Any], Tensor],
    *,
    n_samples: int = 25,
    n_segments: int = 50,
    compactness: float | None = None,
    patch: tuple[int, int] | None = None,
    mask_token_id: int | None = None,
    baseline: Any = 0.0,
    generator: torch.Generator | None = None,
    forward_fn: Callable[..., Any] | None = None,
    background: tuple[Any, ...] | None = None,
    kinds: tuple[str, ...] | None = None,
    layouts: tuple[str | None, ...] | None = None,
    embedding_layer: nn.Module | str | None = "auto",
    max_batch: int = 128,
    blur_sigma: float | None = None,
    names: tuple[str, ...] | None = None,
    feature_mask: FeatureMask = None,
) -> AttributionResult:
    """Kernel SHAP (captum ``KernelShap``, its defaults) over the interpretable features of :func:`lime`.

    Samples: every feature on, every feature off, then coalitions of ``k`` features, ``k`` drawn with probability
    proportional to the Shapley kernel ``(M - 1) / (k (M - k))`` and the features uniformly; weights 1 (the two
    end points ``1e6``); least squares with an intercept (captum's ``SkLearnLinearRegression``; minimum-norm
    when under-determined). Values sum to about ``f(x) - f(every feature off)`` (``completeness_error``).

    Args:
        As :func:`lime` (no ``alpha``, ``kernel_width``; ``feature_mask`` too); the ``kernel_shap`` explainer
        defaults to 2048 samples.

    Returns:
        An :class:`AttributionResult`: ``base_values`` is ``f`` with every feature off.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> x = torch.rand(2, 3)
        >>> r = kernel_shap(net, x, torch.tensor([0, 1]), n_samples=16)
        >>> bool(torch.allclose(r.values[0], net.weight.detach()[[0, 1]] * x, atol=1e-4))
        True
    """
    values, fx, off, coef = surrogate(
        "kernel_shap", model, inputs, target, forward_fn=forward_fn, baseline=baseline, background=background,
        kinds=kinds, layouts=layouts, embedding_layer=embedding_layer, n_samples=n_samples, n_segments=n_segments,
        compactness=compactness, patch=patch, mask_token_id=mask_token_id, alpha=0.0, kernel_width=1.0,
        generator=generator, max_batch=max_batch, blur_sigma=blur_sigma, names=names, feature_mask=feature_mask)
    error = (coef.sum(1).float() - (fx - off)).abs()
    return AttributionResult(values, fx, off, error, error / (fx - off).abs().clamp_min(1e-12))
