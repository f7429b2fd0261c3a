"""Gradient and perturbation attribution (saliency, input x gradient, guided backprop, DeepLIFT, integrated
gradients, SmoothGrad, occlusion, feature ablation; LIME and Kernel SHAP over interpretable features: :func:`lime`,
:func:`kernel_shap`) on one input contract, captum's definitions and defaults.

Every floating input is explained; integer token ids at the output of their embedding layer (one value per token:
the embedding attribution summed over the embedding dim); other integer inputs (attention masks) pass through.
Captum is the engine (its ``attribute`` of each method), except for integrated gradients to a
``completeness_tol``: our adaptive engine (:mod:`._adaptive`, the SHAP engine's cell splitting on one path per
probe), which adds path points where the known segment errors are largest until every probe's relative
completeness error is within the tolerance or it has used ``max_steps`` rows. The noise of SmoothGrad comes from a ``torch.Generator``,
never the global RNG. Everything runs inside :func:`~lightning_xai.functional.explanation_mode`: the model is left
as it was found (modes, ``requires_grad``, ``.grad``, hooks, RNG).

Occlusion and feature ablation are captum's definitions on our batched loop (:mod:`._ablate`), with ``f(x)`` and
``f(baseline)`` scored inside its batches (captum's loop and our separate forwards of them: up to 1.3x the floor of
one batched forward per perturbation on token embeddings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, check_positive_int, expected
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional.attribution._ablate import feature_ablation, occlusion
from lightning_xai.functional.attribution._adaptive import Paths, integrate_to_tolerance
from lightning_xai.functional.attribution._baselines import resolve_baselines
from lightning_xai.functional.attribution._defaults import ablation_mask, blur, occlusion_window, patch_size
from lightning_xai.functional.attribution._feature_mask import FeatureMask, resolve_feature_masks
from lightning_xai.functional.attribution._methods import check_deeplift, noise_tunnel, run_method
from lightning_xai.functional.attribution._prepare import prepare, token_hook
from lightning_xai.functional.attribution._result import AttributionResult
from lightning_xai.functional.attribution._surrogate_api import kernel_shap, lime, superpixels

__all__ = [
    "ATTRIBUTION_METHODS",
    "BASELINE_METHODS",
    "COMPLETE_METHODS",
    "GRADIENT_METHODS",
    "AttributionResult",
    "ablation_mask",
    "attribute",
    "blur",
    "kernel_shap",
    "lime",
    "occlusion_window",
    "patch_size",
    "superpixels",
]

GRADIENT_METHODS = ("saliency", "input_x_gradient", "guided_backprop", "deeplift", "integrated_gradients")
ATTRIBUTION_METHODS = (*GRADIENT_METHODS, "smoothgrad", "occlusion", "feature_ablation")
BASELINE_METHODS = ("deeplift", "integrated_gradients", "occlusion", "feature_ablation")
COMPLETE_METHODS = ("deeplift", "integrated_gradients")  # sum(attr) = f(x) - f(baseline), up to their error


def attribute(
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: Tensor | Callable[[Any], Tensor],
    method: str = "saliency",
    *,
    forward_fn: Callable[..., Any] | None = None,
    baseline: Any = "zeros",
    background: tuple[Any, ...] | None = None,
    kinds: tuple[str, ...] | None = None,
    layouts: tuple[str | None, ...] | None = None,
    embedding_layer: nn.Module | str | None = "auto",
    n_steps: int = 50,
    ig_method: str = "gausslegendre",
    completeness_tol: float | None = None,
    max_steps: int = 1024,
    completeness_stop: str = "every",
    base: str = "saliency",
    nt_samples: int = 5,
    stdevs: float | tuple[float, ...] = 1.0,
    nt_type: str = "smoothgrad",
    generator: torch.Generator | None = None,
    window: int | tuple[int, ...] | dict[int, tuple[int, ...]] | None = None,
    stride: int | tuple[int, ...] | dict[int, tuple[int, ...]] | None = None,
    patch: tuple[int, int] | None = None,
    feature_mask: FeatureMask = None,
    blur_sigma: float | None = None,
    max_batch: int = 128,
    strict: bool = False,
) -> AttributionResult:
    """Attributions of ``target`` by ``method`` (captum's definition and defaults) for every explained input.

    Args:
        model: The model.
        inputs: A tensor or tuple of model inputs, batch first (floating ones explained, token ids at their
            embedding layer, other batched integers passed through).
        target: The class per probe ``(B,)``, or a callable mapping the output to one score per probe.
        method: One of :data:`ATTRIBUTION_METHODS`.
        forward_fn: ``forward_fn(model, *inputs)`` returning ``(B, classes)`` scores (default ``model(*inputs)``).
        baseline: Of ``deeplift``, ``integrated_gradients``, ``occlusion``, ``feature_ablation`` (and a smoothed
            base): ``"zeros"``, ``"blur"``, ``"mean"``, a number, or a tensor / tuple of tensors, one per
            explained input (see :func:`._baselines.resolve_baselines`).
        background: Inputs of a background batch, like ``inputs``, for ``baseline="mean"``.
        kinds: Input kind per input (``image``, ``video``, ``spectrogram``, ``tokens``, ``tabular``): the defaults
            of blur, occlusion windows and ablation patches; default from the number of dims.
        layouts: ``BTCHW``/``BCTHW`` per clip input (``None`` for the others).
        embedding_layer: The token embedding layer (module, dotted name, ``"auto"``: found; none: no tokens).
        n_steps, ig_method: Integrated gradients' steps and quadrature (captum's ``n_steps``, ``method``), used
            when ``completeness_tol`` is ``None``.
        completeness_tol: Integrated gradients (not smoothed): if set, our adaptive engine instead of captum's
            fixed quadrature: path points are added in rounds until each probe's ``relative_error`` is at most
            this (the result's ``converged``), or it has used ``max_steps`` gradient rows (``n_steps_used``).
        max_steps: Gradient rows per probe the adaptive rounds may reach.
        completeness_stop: When the adaptive rounds stop: ``"every"`` (default) when every probe meets
            ``completeness_tol``; ``"median"`` as soon as the median probe does (the criterion a fixed ``n_steps``
            is usually judged by, measured in ``benchmarks/attribution.py``): cheaper, and the probes still above
            the tolerance are reported in ``converged`` -- never hidden. The median is over the probes integrated
            together (all of them, unless their inputs exceed the engine's 64 MiB accumulator), so a probe's
            attributions then depend on the rest of the batch.
        base, nt_samples, stdevs, nt_type: SmoothGrad's base gradient method, samples (captum's 5; the
            ``smoothgrad`` explainer defaults to 50, stable between seeds), noise std (absolute, per input or one)
            and aggregation (``"smoothgrad"``, ``"smoothgrad_sq"``, ``"vargrad"``).
        generator: SmoothGrad's noise (default: a generator seeded with 0).
        window, stride: Occlusion's window and stride of one sample (tokens: in tokens), for every explained input
            or a dict by input position (``None``: per kind, see :func:`occlusion_window`; a window given alone
            moves by itself).
        patch: Pixel patch ``(h, w)`` of image occlusion windows and ablation features (default: an eighth).
        feature_mask: Feature ablation's features (captum's ``feature_mask``): an integer tensor broadcastable to the
            input (token inputs: to the ids ``(B, L)``; batch dim 1 or B), equal ids forming one feature (across
            inputs too: ablated together); several explained inputs: a tuple of one per explained input or a dict by
            input position, ``None`` keeping an input's default features (see :func:`ablation_mask`).
        blur_sigma: Gaussian sigma of ``baseline="blur"`` (default: the shorter side over 8).
        max_batch: Rows per forward pass (integrated gradients' steps, perturbations).
        strict: DeepLIFT: raise instead of warning about layers captum's DeepLift does not handle.

    Returns:
        An :class:`AttributionResult`.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> r = attribute(net, torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), "integrated_gradients")
        >>> r.values[0].shape, bool(r.relative_error.max() < 1e-4)
        (torch.Size([4, 3]), True)
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> r = attribute(net, torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), "integrated_gradients",
        ...               completeness_tol=0.01)
        >>> bool(r.converged.all()), bool((r.relative_error <= 0.01).all()), bool((r.n_steps_used >= 8).all())
        (True, True, True)
    """
    check_choice("method", method, ATTRIBUTION_METHODS)
    adaptive = method == "integrated_gradients" and completeness_tol is not None
    if completeness_tol is not None and (isinstance(completeness_tol, bool)
                                         or not isinstance(completeness_tol, (int, float)) or completeness_tol <= 0):
        raise ValueError(expected("completeness_tol", "a number larger than 0 or None", completeness_tol))
    check_positive_int("max_steps", max_steps)
    check_choice("completeness_stop", completeness_stop, ("every", "median"))
    if feature_mask is not None and method != "feature_ablation":
        raise ValueError(expected("feature_mask", "None for method "
                                  f"{method!r} (it takes one for 'feature_ablation'; occlusion: `window`, `stride`)",
                                  "a mask"))
    if method == "smoothgrad":
        check_choice("base", base, GRADIENT_METHODS)
        check_choice("nt_type", nt_type, ("smoothgrad", "smoothgrad_sq", "vargrad"))
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    scoring = callable(target) and not isinstance(target, Tensor)
    explicit = embedding_layer is not None and not (isinstance(embedding_layer, str) and embedding_layer == "auto")
    with explanation_mode(model), token_hook(model, embedding_layer) as swap:
        for parameter in model.parameters():
            parameter.requires_grad_(False)  # gradients to the inputs only (the guard restores the flags)
        prep = prepare(model, inputs, forward_fn, target, swap, explicit)
        device = prep.explained[0].device
        tgt = None if scoring else target.to(device).reshape(-1).clone()  # type: ignore[union-attr]
        kinds = kinds or tuple(_kind(x, i == prep.token) for i, x in enumerate(inputs))
        layouts = layouts or (None,) * len(inputs)
        core = base if method == "smoothgrad" else method
        baselines = None
        if core in BASELINE_METHODS:
            baselines = resolve_baselines(baseline, prep, kinds, background, blur_sigma)
        options: dict[str, Any] = {"n_steps": n_steps, "ig_method": ig_method, "max_batch": max_batch}
        if method == "occlusion":
            options["windows"] = _windows(prep, kinds, layouts, window, stride, patch)
        if method == "feature_ablation":
            given = resolve_feature_masks(feature_mask, prep, inputs)
            options["masks"] = _masks(prep, kinds, layouts, patch, given)
        if core == "deeplift":
            check_deeplift(model, prep, strict)

        def run(xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return run_method(core, prep, xs, baselines, tgt, options)

        steps = ends = None
        if method == "smoothgrad":
            gen = generator if generator is not None else torch.Generator().manual_seed(0)
            attrs = noise_tunnel(run, prep.explained, stdevs, nt_samples, nt_type, gen)
        elif adaptive:
            paths = Paths(prep.module, prep.explained, baselines, prep.rows, tgt)  # type: ignore[arg-type]
            attrs, steps, ends = integrate_to_tolerance(paths, float(completeness_tol),  # type: ignore[arg-type]
                                                        max_steps, max_batch, stop=completeness_stop)
        elif method == "occlusion":  # our batched loop, f(x) and f(baseline) among its rows
            attrs, *ends = occlusion(prep, baselines, tgt, *options["windows"], max_batch)  # type: ignore[arg-type]
        elif method == "feature_ablation":
            attrs, *ends = feature_ablation(prep, baselines, tgt, options["masks"], max_batch)  # type: ignore[arg-type]
        else:
            attrs = run(prep.explained)
        if ends is not None:  # the adaptive engine's f(x), f(baseline): not evaluated twice
            outputs, base_values = (v.float().to(device) for v in ends)
        else:
            outputs = prep.scores(prep.explained, tgt)
            base_values = prep.scores(baselines, tgt) if baselines is not None and method != "smoothgrad" else None
    values: list[Tensor | None] = [None] * len(inputs)
    for slot, a in zip(prep.slots, attrs):
        values[slot] = a.sum(-1) if slot == prep.token else a
    error = relative = None
    if method in COMPLETE_METHODS and base_values is not None:
        total = sum(a.detach().double().flatten(1).sum(1).float() for a in attrs)
        gap = outputs - base_values
        error = (total - gap).abs()  # type: ignore[operator]
        relative = error / gap.abs().clamp_min(1e-12)
    converged = None if steps is None else relative <= completeness_tol  # type: ignore[operator]
    return AttributionResult(tuple(values), outputs, base_values, error, relative, converged, steps)


def _kind(x: Any, token: bool) -> str:
    if token or not isinstance(x, Tensor) or not x.is_floating_point():
        return "tokens"
    return {5: "video", 4: "image", 3: "spectrogram"}.get(x.dim(), "tabular")


def _windows(prep: Any, kinds: tuple[str, ...], layouts: tuple[str | None, ...], window: Any, stride: Any,
             patch: Any) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    windows, strides = [], []
    for e, s in zip(prep.explained, prep.slots):
        shape = tuple(e.shape[1:])
        w, st = occlusion_window(shape, kinds[s], layouts[s], patch)
        given = _per(window, s)
        if given is not None:
            w = tuple(given) + shape[len(given):] if kinds[s] == "tokens" else tuple(given)
            st = w
        given_stride = _per(stride, s)
        if given_stride is not None:
            st = tuple(given_stride) + shape[len(given_stride):] if kinds[s] == "tokens" else tuple(given_stride)
        for name, value in (("window", w), ("stride", st)):
            if len(value) != len(shape) or any(v < 1 or v > n for v, n in zip(value, shape)):
                raise ValueError(expected(name, f"one size per dim of one sample {shape} (tokens: of (L,), each "
                                          "between 1 and that dim)", value))
        if any(s_ > w_ and w_ < n for s_, w_, n in zip(st, w, shape)):  # elements no window covers (captum refuses too)
            raise ValueError(expected("stride", f"at most the window {w} in every dim the window does not span",
                                      st))
        windows.append(w)
        strides.append(st)
    return tuple(windows), tuple(strides)


def _per(spec: Any, slot: int) -> tuple[int, ...] | None:
    """A window/stride: one for every explained input (an int or tuple), or a dict by input position."""
    if isinstance(spec, dict):
        spec = spec.get(slot)
    if spec is None:
        return None
    return (spec,) if isinstance(spec, int) else tuple(spec)


def _masks(prep: Any, kinds: tuple[str, ...], layouts: tuple[str | None, ...], patch: Any,
           given: tuple[Tensor | None, ...]) -> tuple[Tensor, ...]:
    """The given feature masks, and default ones (numbered past every given id) for the other explained inputs."""
    masks, offset = [], max((int(g.max()) for g in given if g is not None and g.numel()), default=-1) + 1
    for e, s, g in zip(prep.explained, prep.slots, given):
        if g is not None:
            masks.append(g)
            continue
        mask = ablation_mask(tuple(e.shape[1:]), kinds[s], layouts[s], patch).to(e.device) + offset
        offset = int(mask.max()) + 1  # feature ids unique across inputs: each is ablated on its own
        masks.append(mask)
    return tuple(masks)
