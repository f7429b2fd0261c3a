"""Token scores back on the explained input: the patch grid of images, clips and spectrograms (prefix tokens
dropped, the grid and its axis order from a reshape transform such as the layer search finds), tokens in a row over a
waveform, and maps upsampled to the input's size."""

from __future__ import annotations

from collections.abc import Callable

import torch  # noqa: F401  (the docstring examples use it)
import torch.nn.functional as F
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.functional._layers_tokens import map_axes

__all__ = ["token_grid_scores", "upsample_scores"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def token_grid_scores(scores: Tensor, reshape: Callable[[Tensor], Tensor] | None = None,
                      num_prefix_tokens: int = 0) -> Tensor:
    """``(B, N)`` token scores on the input's grid: through ``reshape`` (a reshape transform mapping ``(B, N, D)``
    tokens to a channels-first ``(B, D, *grid)`` map in the input's axis order, prefix tokens dropped), else the
    tokens after ``num_prefix_tokens`` in a row ``(B, N - prefix)``.

    Example:
        >>> from lightning_xai.functional import vit_reshape_transform
        >>> token_grid_scores(torch.arange(5.0)[None], vit_reshape_transform).tolist()
        [[[1.0, 2.0], [3.0, 4.0]]]
        >>> token_grid_scores(torch.arange(5.0)[None], num_prefix_tokens=1).tolist()
        [[1.0, 2.0, 3.0, 4.0]]
    """
    if scores.dim() != 2:
        raise ValueError(expected("scores", "(batch, tokens) scores", tuple(scores.shape)))
    if reshape is None:
        return scores[:, num_prefix_tokens:]
    return reshape(scores[:, :, None])[:, 0]


def upsample_scores(grid: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Resize ``(B, *grid)`` scores to the input of ``shape`` (batch first): images to ``(B, H, W)``, clips to
    ``(B, T, H, W)`` (either layout), spectrograms to their own ``(B, A, B')``, waveforms ``(B, samples)`` linearly;
    (bi/tri)linear, ``align_corners=False``.

    Example:
        >>> upsample_scores(torch.ones(2, 4, 4), (2, 3, 32, 32)).shape
        torch.Size([2, 32, 32])
        >>> upsample_scores(torch.ones(1, 10), (1, 400)).shape
        torch.Size([1, 400])
    """
    axes = (1,) if len(shape) == 2 else map_axes(tuple(shape))
    size = tuple(shape[a] for a in axes)
    if grid.dim() - 1 != len(size):
        raise ValueError(expected("grid", f"scores on a {len(size)}-axis grid of the input {tuple(shape)}",
                                  tuple(grid.shape)))
    if tuple(grid.shape[1:]) == size:
        return grid.float()
    return F.interpolate(grid[:, None].float(), size=size, mode=_MODES[len(size)], align_corners=False)[:, 0]


