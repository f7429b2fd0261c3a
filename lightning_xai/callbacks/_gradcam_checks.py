"""GradCAMCallback's loud warning when every map of a method is flat (the layer holds no spatial information)."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["warn_flat"]


def warn_flat(layer: str, flat: dict[str, list[bool]], candidates: list[str] | None, epoch: int) -> None:
    """Say loudly when a method's maps are flat for every probe: the layer has no spatial information."""
    methods = [m for m, f in flat.items() if f and all(f)]
    if methods:
        rank_zero_warn(
            f"lightning_xai: GradCAMCallback's {methods} maps at layer {layer!r} are flat (constant) for every probe "
            f"at epoch {epoch}: that layer holds no spatial information to show (a pooled or token output, or a "
            f"dead layer). Set `target_layer=` to a feature map with spatial extent, e.g. one of "
            f"{candidates}; logged as xai/gradcam/<method>/flat.", category=RuntimeWarning)
