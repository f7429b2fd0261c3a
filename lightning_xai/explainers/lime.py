"""LIME and Kernel SHAP explainers over interpretable features (captum's ``Lime`` and ``KernelShap``: definitions
and defaults), registered as ``lime`` and ``kernel_shap``: SLIC superpixels of images, tokens, tabular elements,
time-frequency patches of spectrograms, per-frame patches of clips.

Both draw their samples from their own ``torch.Generator(seed)`` (``stochastic``: a callback measures their
stability between two seeds). Every subclass also takes the base's keywords: ``embedding_layer``, ``tokenizer``,
``max_batch``, ``video_layout``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from lightning_xai.adapters import ModelInputs
    >>> e = KernelShapExplainer(n_samples=32).explain(nn.Linear(3, 2), ModelInputs((torch.rand(2, 3),)))
    >>> e.values["input"].shape, bool(e.completeness_error.max() < 1e-3)
    (torch.Size([2, 3]), True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected
from lightning_xai.explainers._attribution_base import AttributionExplainer, check_baseline
from lightning_xai.functional.attribution import AttributionResult, kernel_shap, lime

__all__ = ["SURROGATE_EXPLAINERS", "KernelShapExplainer", "LimeExplainer"]


class _Surrogate(AttributionExplainer):
    """The features, sampling and seed LIME and Kernel SHAP share."""

    stochastic = True  # AttributionCallback measures its stability between two seeds

    def __init__(self, n_samples: int = 25, n_segments: int = 50, compactness: float | None = None,
                 patch: tuple[int, int] | None = None, mask_token_id: int | None = None, baseline: Any = 0.0,
                 seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_samples = check_positive_int("n_samples", n_samples)
        self.n_segments = check_positive_int("n_segments", n_segments)
        if compactness is not None and (isinstance(compactness, bool) or not isinstance(compactness, (int, float))
                                        or compactness <= 0):
            raise ValueError(expected("compactness", "None or a number larger than 0", compactness))
        self.compactness = None if compactness is None else float(compactness)
        self.patch = None if patch is None else tuple(patch)
        self.mask_token_id = None if mask_token_id is None else check_non_negative_int("mask_token_id",
                                                                                      mask_token_id)
        self.baseline = check_baseline(baseline)
        self.n_background = 32 if isinstance(baseline, str) and baseline == "mean" else 0
        self.seed = check_non_negative_int("seed", seed)

    def options(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "n_segments": self.n_segments, "compactness": self.compactness,
                "patch": self.patch, "mask_token_id": self.mask_token_id, "baseline": self.baseline,
                "generator": torch.Generator().manual_seed(self.seed)}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "seed": self.seed}


class LimeExplainer(_Surrogate):
    """LIME (captum ``Lime``): ``n_samples`` perturbations keeping each feature with probability 1/2, weighted by
    ``exp(-d^2 / (2 kernel_width^2))`` of their cosine distance ``d`` to the input; ``Lasso(alpha)`` fitted to the
    target score; each element carries its feature's coefficient (tokens: one value per token).

    Args:
        n_samples: perturbations per probe (captum's default 25: raise it for stable maps).
        alpha: the Lasso's L1 weight (captum's ``SkLearnLasso(alpha=0.01)``; 0: weighted least squares).
        kernel_width: width of the similarity kernel (captum's 1.0).
        n_segments: SLIC superpixels per image (scikit-image ``slic`` on the image rescaled to [0, 1]).
        compactness: SLIC's compactness (default 10 for RGB, compared in CIELAB, else 0.1).
        patch: ``(h, w)`` of spectrogram and clip patches (default an eighth of each side).
        mask_token_id: the id a dropped token takes (default the embedding's ``padding_idx``, else 0); padding
            positions are not features.
        baseline: what dropped features of floating inputs take: ``0.0`` (captum's), a number, ``"blur"``,
            ``"mean"``, tensor(s).
        seed: seed of the sampling generator (each explain starts it afresh).
    """

    name = "lime"

    def __init__(self, n_samples: int = 25, alpha: float = 0.01, kernel_width: float = 1.0, **kwargs: Any) -> None:
        super().__init__(n_samples=n_samples, **kwargs)
        for key, value in (("alpha", alpha), ("kernel_width", kernel_width)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    key == "kernel_width" and value == 0):
                raise ValueError(expected(key, "a number larger than 0" if key == "kernel_width" else
                                          "a number of at least 0", value))
        self.alpha, self.kernel_width = float(alpha), float(kernel_width)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "alpha": self.alpha, "kernel_width": self.kernel_width}

    def _engine(self, names: tuple[str, ...]) -> Callable[..., AttributionResult]:
        return functools.partial(lime, names=names)


class KernelShapExplainer(_Surrogate):
    """Kernel SHAP (captum ``KernelShap``): all features, none, then coalitions drawn by the Shapley kernel;
    weighted least squares; ``base_values`` is ``f`` with every feature off and the values sum to about
    ``f(x) - base_values`` (``completeness_error``). Arguments as :class:`LimeExplainer` (no ``alpha``,
    ``kernel_width``)."""

    name = "kernel_shap"

    def _engine(self, names: tuple[str, ...]) -> Callable[..., AttributionResult]:
        return functools.partial(kernel_shap, names=names)


#: the surrogate explainers by registry name
SURROGATE_EXPLAINERS: dict[str, type[AttributionExplainer]] = {
    cls.name: cls for cls in (LimeExplainer, KernelShapExplainer)
}
