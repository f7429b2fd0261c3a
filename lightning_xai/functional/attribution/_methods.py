"""One attribution method on prepared inputs: captum's implementation (the reference, and the engine), and the
noise tunnel (SmoothGrad, SmoothGrad², VarGrad) around any gradient method, drawn from a ``torch.Generator``."""

from __future__ import annotations

import contextlib

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.functional._seeds import row_generators
from lightning_xai.functional.attribution._prepare import Prepared
from lightning_xai.functional.shap._deep_check import describe, unsupported_layers

__all__: list[str] = []

_QUIET = (  # captum's notice that it hooks the activations (it removes them), torch's about module-output grads
    "Setting forward, backward hooks and attributes on non-linear",
    "Setting backward hooks on ReLU activations",
    "Full backward hook is firing when gradients are computed with respect to module outputs",
)


def captum_rules() -> dict[str, str]:
    """Leaf classes captum's DeepLift applies the rescale rule to (``SUPPORTED_NON_LINEAR``), by class name."""
    from captum.attr._core.deep_lift import SUPPORTED_NON_LINEAR

    return {cls.__name__: "maxpool" if "MaxPool" in cls.__name__ else "nonlinear_1d" for cls in SUPPORTED_NON_LINEAR}


def check_deeplift(model: nn.Module, prep: Prepared, strict: bool) -> list[str]:
    """Name the layers captum's DeepLift differentiates plainly though they are nonlinear (a warning, or with
    ``strict`` an error naming ``model``): its values then do not add up to ``f(x) - f(baseline)``."""

    def run() -> None:
        prep.module(*[e[:1].clone().requires_grad_(True) for e in prep.explained], *[r[:1] for r in prep.rows])

    layer = prep.swap.layer if prep.swap is not None else None
    listing = unsupported_layers(prep.module, model, run, layer, rules=captum_rules(), who="captum")
    if listing and strict:
        raise ValueError(expected("model", "a model made only of layers captum's DeepLift handles (strict=True)",
                                  describe(listing)) + " Use integrated_gradients.")
    if listing:
        warnings.warn(f"captum's DeepLift does not handle these layers: {describe(listing)}; its values will not add "
                      "up to f(x) - f(baseline) (see completeness_error); use integrated_gradients.", UserWarning,
                      stacklevel=4)
    return listing


@contextlib.contextmanager
def deterministic_warn_only() -> Iterator[None]:
    """Under ``torch.use_deterministic_algorithms(True)`` (``Trainer(deterministic=True)`` sets it and leaves it on),
    an op without a deterministic kernel raises: captum's DeepLift unpools max-pooling (``max_unpool2d``). The
    explanation then runs with ``warn_only=True`` (torch says which op, once) and the setting is restored.

    Example:
        >>> torch.use_deterministic_algorithms(True)
        >>> with deterministic_warn_only():
        ...     inside = torch.is_deterministic_algorithms_warn_only_enabled()
        >>> inside, torch.is_deterministic_algorithms_warn_only_enabled()
        (True, False)
        >>> torch.use_deterministic_algorithms(False)
    """
    strict = torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    if strict:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        if strict:
            torch.use_deterministic_algorithms(True, warn_only=False)


def run_method(method: str, prep: Prepared, explained: tuple[Tensor, ...], baselines: tuple[Tensor, ...] | None,
               target: Tensor | None, options: dict[str, Any]) -> tuple[Tensor, ...]:
    """Captum's gradient ``method`` on ``explained`` (fresh leaves), scored by ``prep.module``; attributions in the
    explained tensors' shapes (occlusion and feature ablation: :mod:`._ablate`)."""
    from captum import attr

    xs = tuple(e.detach().clone().requires_grad_(True) for e in explained)
    common: dict[str, Any] = {"target": target, "additional_forward_args": prep.rows or None}
    module = prep.module
    with warnings.catch_warnings(), deterministic_warn_only():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        if method == "saliency":
            out = attr.Saliency(module).attribute(xs, abs=True, **common)
        elif method == "input_x_gradient":
            out = attr.InputXGradient(module).attribute(xs, **common)
        elif method == "guided_backprop":
            out = attr.GuidedBackprop(module).attribute(xs, **common)
        elif method == "deeplift":
            out = attr.DeepLift(module, multiply_by_inputs=True, eps=1e-10).attribute(xs, baselines, **common)
        elif method == "integrated_gradients":
            out = attr.IntegratedGradients(module).attribute(
                xs, baselines, n_steps=options["n_steps"], method=options["ig_method"],
                internal_batch_size=options.get("max_batch"), **common)
        else:
            raise ValueError(expected("method", "a captum gradient attribution method", method))
    return tuple(o.detach() for o in out)


def noise_tunnel(base: Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]], explained: tuple[Tensor, ...],
                 stdevs: float | tuple[float, ...], nt_samples: int, nt_type: str,
                 generator: torch.Generator) -> tuple[Tensor, ...]:
    """Captum's ``NoiseTunnel`` with its noise drawn per sample: ``nt_samples`` times, every explained tensor plus
    ``N(0, stdev)`` noise, then the mean (``"smoothgrad"``), the mean of squares (``"smoothgrad_sq"``) or the
    variance (``"vargrad"``) of ``base``'s attributions. Each sample's noise comes from its own generator
    (:func:`~lightning_xai.functional._seeds.row_generators` of ``generator`` and the explained tensors; per sample
    and noise draw, one row per tensor, in order): a sample's map does not depend on the rest of the batch.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = noise_tunnel(lambda xs: tuple(x * 2 for x in xs), (torch.ones(2, 3),), 0.0, 4, "smoothgrad", g)
        >>> out[0].tolist()
        [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    sds = stdevs if isinstance(stdevs, tuple) else (stdevs,) * len(explained)
    if len(sds) != len(explained):
        raise ValueError(expected("stdevs", f"a number or one per explained input ({len(explained)})", stdevs))
    total: list[Tensor] = []
    squares: list[Tensor] = []
    gens = row_generators(generator, explained)
    for s in range(nt_samples):
        noise = [[torch.randn((1, *e.shape[1:]), generator=g) for e in explained] for g in gens]
        noisy = tuple(e + torch.cat([row[i] for row in noise]).to(e) * sd
                      for i, (e, sd) in enumerate(zip(explained, sds)))
        attrs = base(noisy)
        if s == 0:
            total, squares = [a.clone() for a in attrs], [a * a for a in attrs]
        else:
            for t, q, a in zip(total, squares, attrs):
                t.add_(a)
                q.add_(a * a)
    mean = [t / nt_samples for t in total]
    if nt_type == "smoothgrad":
        return tuple(mean)
    if nt_type == "smoothgrad_sq":
        return tuple(q / nt_samples for q in squares)
    return tuple(q / nt_samples - m * m for q, m in zip(squares, mean))
