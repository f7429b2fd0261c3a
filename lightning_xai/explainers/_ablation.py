"""The perturbation explainers: occlusion and feature ablation (captum's definitions; our batched loops)."""

from __future__ import annotations

from typing import Any

from lightning_xai.explainers._attribution_base import Baseline, Baselined, check_feature_masks

__all__ = ["FeatureAblationExplainer", "OcclusionExplainer"]


class OcclusionExplainer(Baselined):
    """Occlusion (captum ``Occlusion``): the score's drop when a window of the input takes the baseline, averaged
    over the windows covering each element.

    Args:
        window: the window of one sample (``None``: one token, one tabular feature, or an eighth of the image's
            sides over every channel (one frame of a clip), moved by half of it); a dict by input name for several.
        stride: its step (``None``: half the default window, or the given window itself).
        baseline: the value occluded regions take: ``0.0`` (captum's), a number, ``"blur"``, ``"mean"``, tensor(s).
        patch: ``(h, w)`` pixels of the default image window.
    """

    name = "occlusion"

    def __init__(self, window: Any = None, stride: Any = None, baseline: Baseline = 0.0,
                 patch: tuple[int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(baseline, **kwargs)
        self.window, self.stride, self.patch = window, stride, None if patch is None else tuple(patch)

    def options(self) -> dict[str, Any]:
        return {**super().options(), "window": self.window, "stride": self.stride, "patch": self.patch}


class FeatureAblationExplainer(Baselined):
    """Feature ablation (captum ``FeatureAblation``): the score's drop when one feature takes the baseline; a
    feature is a tabular element, a token, or a patch of an image (per frame for clips), every channel at once, or
    the features of ``feature_mask``.

    Args:
        baseline: the value ablated features take: ``0.0`` (captum's), a number, ``"blur"``, ``"mean"``, tensor(s).
        patch: ``(h, w)`` pixels of an image feature (default: an eighth of each side).
        feature_mask: captum's ``feature_mask``: an integer tensor (or nested list) broadcastable to the input
            (token inputs: to the ids; batch dim 1, or the probe count), equal ids forming one feature; a dict by
            input name for several inputs (the others keep their default features).
    """

    name = "feature_ablation"

    def __init__(self, baseline: Baseline = 0.0, patch: tuple[int, int] | None = None, feature_mask: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(baseline, **kwargs)
        self.patch = None if patch is None else tuple(patch)
        self.feature_mask = check_feature_masks(feature_mask)
        self.splittable = self.splittable and feature_mask is None  # a mask may hold one row per probe

    def options(self) -> dict[str, Any]:
        return {**super().options(), "patch": self.patch, "feature_mask": self.feature_mask}
