"""shap's other explainers (Deep, Kernel, Partition) on the input contract of :func:`expected_gradients`.

Each returns a :class:`~lightning_xai.functional.shap.ShapResult` (``converged`` is ``None``) whose
``completeness_error`` is ``|sum(phi) - (f(x) - base)|`` against the base value the method itself uses:

* :func:`shap_deep` (``shap.DeepExplainer``, DeepLIFT-SHAP; any input kind): base ``E f(background)``, every
  background row, as :func:`expected_gradients`. Exactly additive only through layers shap handles: the
  others are named in a warning before it runs (:mod:`._deep_check`).
* :func:`shap_kernel` (``shap.KernelExplainer``): base ``E f(background)`` over shap's data rows (a
  ``shap.kmeans`` summary beyond ``max_background`` rows); for tokens ``f(every token masked)``.
* :func:`shap_partition` (``shap.PartitionExplainer``, Owen values): base ``f(every feature masked)``, which is
  the mean over the masker's background rows for floating inputs and ``f(every token masked)`` for tokens.

Kernel and partition explain one input of at most 512 features (a small floating input, or the positions
of a token input); images are refused with a ``ValueError`` that names ``engine`` (use ``"gradient"``).
Everything runs inside :func:`explanation_mode`: shap calls ``eval()``/``zero_grad()`` and uses (and
reseeds) the global numpy RNG; flags, ``requires_grad``, ``.grad``, hooks and every RNG are restored.
shap is imported when a function runs, never at import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional.shap._deep import shap_deep
from lightning_xai.functional.shap._inputs import Target, check_inputs
from lightning_xai.functional.shap._masking import (
    Features,
    Run,
    TokenMasker,
    as_rows,
    consecutive_clustering,
    flat_background,
    masking_run,
)
from lightning_xai.functional.shap._result import ShapResult

__all__ = ["shap_deep", "shap_kernel", "shap_partition"]


def shap_kernel(
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Tensor | tuple[Tensor | None, ...],
    target: Target,
    nsamples: int = 1024,
    *,
    forward_fn: Callable[..., Any] | None = None,
    max_batch: int = 64,
    generator: torch.Generator | None = None,
    embedding_layer: nn.Module | str | None = "auto",
    mask_token_id: int | None = None,
    max_background: int = 100,
) -> ShapResult:
    """SHAP values by ``shap.KernelExplainer`` (model-agnostic), in the layout of :func:`expected_gradients`.

    One input is explained; its features are the elements of a small floating input (tabular ``(B, F)``, or
    any shape up to 512 elements, flattened) or the positions of a token input. A missing element takes the
    value of each background row in turn (interventional SHAP): the background rows are shap's data as
    given, up to ``max_background`` rows; a larger background is summarised by ``shap.kmeans(background,
    max_background)`` (weighted centroids, each coordinate rounded to a value of the data). A missing token
    takes ``mask_token_id``; positions holding the embedding's ``padding_idx`` are not features (value 0),
    and other inputs (attention masks) are passed through. Token baselines are not used (may be ``None``).

    Base value: ``E f(background)`` over shap's data rows (the weighted centroids beyond ``max_background``);
    for tokens ``f(x with every token masked)``. shap's solver enforces ``sum(phi) = f(x) - base``, so
    ``completeness_error`` only shows numerical error. With ``nsamples >= 2**M - 2`` every coalition is
    enumerated and the values are exact Shapley values; otherwise coalitions are sampled (numpy's RNG,
    seeded per probe from ``generator``).

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors, batch first (one of them explained).
        baselines: The background, same structure as ``inputs``.
        target: Class indices or a callable, as in :func:`expected_gradients`.
        nsamples: Coalitions per probe (shap's ``nsamples``; each is evaluated on every data row).
        forward_fn: ``forward_fn(model, *inputs)`` returns the output.
        max_batch: Most rows per forward pass.
        generator: Seeds shap's sampling per probe; default a fresh one seeded 0.
        embedding_layer: As in :func:`expected_gradients`.
        mask_token_id: The id of a missing token; default the embedding's ``padding_idx``, else 0.
        max_background: Most background rows used as they are.

    Returns:
        A :class:`ShapResult`; ``nsamples`` holds the coalitions evaluated per probe.

    Raises:
        ValueError: For more than one explained input, or more than 512 features (the message names
            ``engine``: use ``engine='gradient'``); for bad shapes or values.
        TypeError: For arguments of the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> result = shap_kernel(net, torch.randn(2, 4), torch.randn(8, 4), 0)
        >>> result.values[0].shape, bool((result.completeness_error < 1e-4).all())
        (torch.Size([2, 4]), True)
    """
    inputs = check_inputs(inputs)
    run = Run("kernel", forward_fn, max_batch, generator, embedding_layer, mask_token_id)
    run.check(nsamples, max_background)
    import shap

    summary: dict[str, Any] = {}

    def data(feats: Features) -> Any:
        """shap's data: the background rows, or their k-means summary (computed once)."""
        if "data" not in summary:
            flat = flat_background(feats)
            summary["data"] = flat if flat.shape[0] <= max_background else shap.kmeans(flat, max_background)
        return summary["data"]

    def background(feats: Features) -> tuple[Tensor, Tensor]:
        rows = data(feats)
        if isinstance(rows, np.ndarray):
            return as_rows(feats, rows), torch.full((rows.shape[0],), 1.0 / rows.shape[0])
        return as_rows(feats, rows.data), torch.as_tensor(rows.weights, dtype=torch.float64)

    def explain(feats: Features, b: int) -> tuple[np.ndarray, int]:
        background_rows = feats.masked(b) if feats.token else data(feats)
        explainer = shap.KernelExplainer(functools.partial(feats.scores, b), background_rows)
        phi = explainer.shap_values(feats.values(b)[None], nsamples=nsamples, l1_reg=False, silent=True)
        return np.asarray(phi)[0], int(getattr(explainer, "nsamplesRun", 0))

    return masking_run(model, inputs, baselines, target, run, explain, background)


def shap_partition(
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    baselines: Tensor | tuple[Tensor | None, ...],
    target: Target,
    nsamples: int = 500,
    *,
    forward_fn: Callable[..., Any] | None = None,
    max_batch: int = 64,
    generator: torch.Generator | None = None,
    embedding_layer: nn.Module | str | None = "auto",
    mask_token_id: int | None = None,
    max_background: int = 100,
    clustering: str = "consecutive",
) -> ShapResult:
    """Owen values by ``shap.PartitionExplainer``, in the layout of :func:`expected_gradients`.

    Features as in :func:`shap_kernel` (one input; elements of a small floating input, or token positions).
    The hierarchy is ``clustering``: ``"consecutive"`` (default) a balanced binary tree of neighbouring
    features (neighbouring tokens), or for floating inputs any ``scipy.spatial.distance.pdist`` metric
    (``"correlation"``, ...) that shap clusters the background by. Floating inputs are masked by
    ``shap.maskers.Partition(background, max_samples=max_background)`` (a missing feature takes each
    background row's value; beyond ``max_background`` rows shap keeps a deterministic subsample); tokens by a
    masker that puts ``mask_token_id`` in missing positions (padding positions are not features). For a
    model additive in its features the Owen values equal the Shapley values, for any hierarchy.

    Base value: what shap uses, ``f(every feature masked)``: for floating inputs the mean of ``f`` over the
    masker's background rows (``E f(background)`` up to ``max_background`` rows), for tokens ``f(x with every
    token masked)``. The recursion telescopes, so ``sum(phi) = f(x) - base`` up to numerical error.

    Args:
        model: The model.
        inputs: A tensor or tuple of tensors, batch first (one of them explained).
        baselines: The background, same structure as ``inputs``; ignored for tokens (may be ``None``).
        target: Class indices or a callable, as in :func:`expected_gradients`.
        nsamples: shap's ``max_evals`` per probe (masked evaluations, each on every background row).
        forward_fn: ``forward_fn(model, *inputs)`` returns the output.
        max_batch: Most rows per forward pass.
        generator: Seeds shap's tie-breaking per probe; default a fresh one seeded 0.
        embedding_layer: As in :func:`expected_gradients`.
        mask_token_id: The id of a missing token; default the embedding's ``padding_idx``, else 0.
        max_background: Most background rows the masker keeps.
        clustering: ``"consecutive"`` or, for floating inputs, a distance metric for shap's clustering.

    Returns:
        A :class:`ShapResult`; ``nsamples`` holds the masked evaluations per probe.

    Raises:
        ValueError: For more than one explained input, or more than 512 features (the message names
            ``engine``); for a metric ``clustering`` with tokens; for bad shapes or values.
        TypeError: For arguments of the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> result = shap_partition(net, torch.randn(2, 4), torch.randn(8, 4), 0)
        >>> result.values[0].shape, bool((result.completeness_error < 1e-4).all())
        (torch.Size([2, 4]), True)
    """
    inputs = check_inputs(inputs)
    run = Run("partition", forward_fn, max_batch, generator, embedding_layer, mask_token_id)
    run.check(nsamples, max_background)
    if not isinstance(clustering, str) or not clustering:
        raise TypeError(expected("clustering", "'consecutive' or a scipy distance metric name", clustering))
    import shap

    made: dict[str, Any] = {}

    def masker(feats: Features) -> Any:
        """The tabular masker (made once)."""
        if "masker" not in made:
            flat = flat_background(feats)
            tree = consecutive_clustering(flat.shape[1]) if clustering == "consecutive" else clustering
            made["masker"] = shap.maskers.Partition(flat, max_samples=max_background, clustering=tree)
        return made["masker"]

    def explain(feats: Features, b: int) -> tuple[np.ndarray, int]:
        if feats.token and clustering != "consecutive":
            raise ValueError(expected("clustering", "'consecutive' for token inputs", clustering))
        mask: Any = (
            TokenMasker(len(feats.positions(b)), feats.mask_token_id) if feats.token else masker(feats)
        )
        rows = 1 if feats.token else mask.data.shape[0]
        explainer = shap.PartitionExplainer(functools.partial(feats.scores, b), mask)
        batch = max(1, max_batch // rows)  # shap's batches count masks, each one row per background row
        row = feats.values(b)[None]
        explanation = explainer(row, max_evals=max(nsamples, 3), batch_size=batch, silent=True)
        return np.asarray(explanation.values)[0], int(explainer.last_eval_count) + 2

    def background(feats: Features) -> tuple[Tensor, Tensor]:
        data = masker(feats).data
        return as_rows(feats, data), torch.full((data.shape[0],), 1.0 / data.shape[0])

    return masking_run(model, inputs, baselines, target, run, explain, background)
