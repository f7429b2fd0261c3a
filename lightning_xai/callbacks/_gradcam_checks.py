"""GradCAMCallback's checks around the engine: one consistent sample for the layer search, flat maps."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_xai.adapters import ModelInputs

__all__ = ["first_sample", "flat_probes", "reshape_name", "warn_flat"]


def first_sample(inputs: ModelInputs) -> ModelInputs:
    """Every input of the batch cut to its first sample (an image and its text alike), for the layer search.

    Example:
        >>> one = first_sample(ModelInputs((torch.zeros(4, 3, 8, 8),), {"input_ids": torch.zeros(4, 5)}))
        >>> one.args[0].shape[0], one.kwargs["input_ids"].shape[0]
        (1, 1)
    """
    size = inputs.batch_size

    def cut(t: Any) -> Any:
        return t[:1] if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == size else t

    return ModelInputs(tuple(cut(a) for a in inputs.args), {k: cut(v) for k, v in inputs.kwargs.items()},
                       cut(inputs.labels), cut(inputs.mask))


def flat_probes(maps: Tensor) -> list[bool]:
    """Per probe: is the map constant (all zero included) or not finite anywhere? Such a map shows nothing.

    Example:
        >>> flat_probes(torch.stack([torch.ones(2, 2), torch.eye(2)]))
        [True, False]
    """
    v = maps.detach().float().flatten(1)
    return (~((v.amax(1) > v.amin(1)) & torch.isfinite(v).all(1))).tolist()


def warn_flat(layer: str, flat: dict[str, list[bool]], candidates: list[str] | None, epoch: int) -> None:
    """Say loudly when a method's maps are flat for every probe: the layer has no spatial information."""
    methods = [m for m, f in flat.items() if f and all(f)]
    if methods:
        rank_zero_warn(
            f"lightning_xai: GradCAMCallback's {methods} maps at layer {layer!r} are flat (constant) for every probe "
            f"at epoch {epoch}: that layer holds no spatial information to show (a pooled or token output, or a "
            f"dead layer). Set `target_layer=` to a feature map with spatial extent, e.g. one of "
            f"{candidates}; logged as xai/gradcam/<method>/flat.", category=RuntimeWarning)


def reshape_name(reshape: Any) -> str | None:
    """A readable name of a reshape transform (``functools.partial`` shows its function and arguments)."""
    if reshape is None:
        return None
    func = getattr(reshape, "func", reshape)
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', type(func).__name__)}".lstrip(".")
    keywords = getattr(reshape, "keywords", None)
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in keywords.items())})" if keywords else name
