"""Interpretable features of LIME and Kernel SHAP, per input kind: superpixels of images (scikit-image's SLIC),
time-frequency patches of spectrograms, per-frame patches of clips, tokens (padding excluded), tabular elements."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.functional.attribution._defaults import ablation_mask
from lightning_xai.functional.attribution._prepare import Prepared

__all__ = ["superpixels", "warn_underdetermined"]


def superpixels(x: Tensor, n_segments: int = 50, compactness: float | None = None) -> Tensor:
    """SLIC superpixels (``skimage.segmentation.slic``) of images ``(B, C, H, W)``: ``(B, H, W)`` ids from 0.

    Each image is rescaled to [0, 1] first (normalised and raw images alike) and smoothed by a Gaussian of one pixel
    (SLIC's ``sigma=1``: on noisy images, e.g. the synthetic shapes, ``sigma=0`` merges everything into one or two
    segments; with it ``n_segments=50`` gives ~30 on 32x32). ``compactness`` defaults to 10 for 3 channels (SLIC
    works in CIELAB, L in [0, 100]) and 0.1 otherwise (intensities in [0, 1]).

    Example:
        >>> x = torch.zeros(1, 3, 16, 16); x[..., 8:] = 1.0
        >>> ids = superpixels(x, n_segments=4)
        >>> ids.shape, int(ids.min()), bool(ids.max() >= 1)
        (torch.Size([1, 16, 16]), 0, True)
    """
    from skimage.segmentation import slic

    out = []
    for img in x.detach().float().cpu():
        lo, hi = img.min(), img.max()
        img = ((img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)).permute(1, 2, 0).double().numpy()
        channels = img.shape[-1]
        m = compactness if compactness is not None else (10.0 if channels == 3 else 0.1)
        if channels == 1:
            seg = slic(img[..., 0], n_segments=n_segments, compactness=m, start_label=0, channel_axis=None, sigma=1.0)
        else:
            seg = slic(img, n_segments=n_segments, compactness=m, start_label=0, channel_axis=-1,
                       convert2lab=channels == 3, sigma=1.0)
        out.append(torch.as_tensor(np.unique(seg, return_inverse=True)[1].reshape(seg.shape)))
    return torch.stack(out).long()


def feature_masks(prep: Prepared, kinds: tuple[str, ...], layouts: tuple[str | None, ...], n_segments: int,
                  compactness: float | None, patch: tuple[int, int] | None, pad_id: int | None,
                  ids: Tensor | None, given: tuple[Tensor | None, ...] | None = None,
                  ) -> tuple[tuple[Tensor, ...], Tensor, list[list[int]]]:
    """Feature ids per explained tensor ``(B, ...)`` broadcastable to it (``-1``: not a feature, e.g. padding),
    numbered per probe across inputs; the feature count per probe ``(B,)``; the counts per probe and input.
    ``given`` masks (of :func:`._feature_mask.resolve_feature_masks`) are numbered first, their ids in order per
    probe (an id in several inputs is one feature: a count goes to the first input holding it)."""
    masks, per_input = [], []
    batch = prep.explained[0].shape[0]
    given = given or (None,) * len(prep.slots)
    numbered, offset = _numbered(given, batch)
    for e, s, g, n in zip(prep.explained, prep.slots, given, numbered):
        shape = tuple(e.shape[1:])
        if g is not None:
            masks.append(n[0].to(e.device))
            per_input.append(n[1].tolist())
            continue
        if s == prep.token and ids is not None:
            keep = torch.ones_like(ids, dtype=torch.bool) if pad_id is None else ids != pad_id
            mask = torch.where(keep, keep.long().cumsum(1) - 1, -1).cpu().unsqueeze(-1)  # (B, L, 1)
            count = keep.sum(1).cpu()
        elif kinds[s] == "image" and e.dim() == 4:
            mask = superpixels(e, n_segments, compactness).unsqueeze(1)  # (B, 1, H, W)
            count = mask.flatten(1).amax(1) + 1
        else:
            mask = ablation_mask(shape, "tabular" if kinds[s] == "tokens" else kinds[s], layouts[s], patch)
            count = torch.full((batch,), int(mask.max()) + 1)
            mask = mask.expand(batch, *mask.shape[1:])
        masks.append(torch.where(mask >= 0, mask + offset.view(-1, *([1] * (mask.dim() - 1))), -1).to(e.device))
        per_input.append(count.tolist())
        offset = offset + count
    return tuple(masks), offset, [list(c) for c in zip(*per_input)]


def _numbered(given: tuple[Tensor | None, ...], batch: int) -> tuple[list[tuple[Tensor, Tensor] | None], Tensor]:
    """The given masks with each probe's ids renumbered 0, 1, ... in order (``(B, ...)`` each) and the count of
    ids each input holds first, per probe; the total count per probe."""
    full = [g.cpu().expand(batch, *g.shape[1:]) if g is not None else None for g in given]
    flat = [g.reshape(batch, -1) for g in full if g is not None]
    out: list[tuple[Tensor, Tensor] | None] = [None] * len(given)
    if not flat:
        return out, torch.zeros(batch, dtype=torch.long)
    joined = torch.cat(flat, 1)
    ranks, total = [], []
    for row in joined:  # one probe at a time: its own ids
        values = row.unique()
        ranks.append(torch.searchsorted(values, row))
        total.append(len(values))
    start = 0
    seen = [torch.zeros(t, dtype=torch.bool) for t in total]
    for i, g in enumerate(full):
        if g is None:
            continue
        width = g[0].numel()
        rank = torch.stack([r[start:start + width] for r in ranks])
        count = []
        for b in range(batch):  # ids new to this input
            new = torch.zeros(total[b], dtype=torch.bool)
            new[rank[b]] = True
            count.append(int((new & ~seen[b]).sum()))
            seen[b] |= new
        out[i] = (rank.view(g.shape), torch.tensor(count))
        start += width
    return out, torch.tensor(total)


def check_features(method: str, counts: list[list[int]], kinds: tuple[str, ...], slots: tuple[int, ...],
                   names: tuple[str, ...] | None, n_segments: int, given: bool = False) -> None:
    """At least 2 features per probe, or a ``ValueError`` naming the inputs, their kinds and ``n_segments`` (with a
    ``feature_mask`` given: naming it)."""
    for b, per in enumerate(counts):
        if sum(per) >= 2:
            continue
        if given:
            raise ValueError(expected("feature_mask", f"at least 2 distinct ids (features) per sample for {method}",
                                      f"sample {b} with {sum(per)} feature{'s' * (sum(per) != 1)}"))
        parts = []
        for s, n in zip(slots, per):
            name = names[s] if names is not None and s < len(names) else f"inputs[{s}]"
            unit = {"image": "superpixel", "tokens": "non-padding token", "tabular": "element"}.get(kinds[s], "patch")
            extra = f" with n_segments={n_segments}" if kinds[s] == "image" else ""
            parts.append(f"input {name!r} ({kinds[s]}): {n} {unit}{'s' * (n != 1)}{extra}")
        hint = ("raise `n_segments` for images, give more elements, tokens or a smaller `patch`" if
                any(kinds[s] == "image" for s in slots) else "give more elements, tokens or a smaller `patch`")
        raise ValueError(expected("inputs", f"at least 2 features per sample for {method} ({hint})",
                                  f"sample {b} with {'; '.join(parts)}"))


def kind_of(x: object, token: bool) -> str:
    """The input kind from the number of dims, when the caller gives none."""
    if token or not isinstance(x, Tensor) or not x.is_floating_point():
        return "tokens"
    return {5: "video", 4: "image", 3: "spectrogram"}.get(x.dim(), "tabular")


def warn_underdetermined(method: str, counts: Tensor, n_samples: int) -> None:
    """Warn when a probe has at least as many features (plus the intercept) as ``n_samples``: the surrogate's
    coefficients are then not determined by the samples (least squares picks the minimum-norm solution, the Lasso
    its own), so the map depends on that choice rather than on the model.

    Example:
        >>> import pytest
        >>> with pytest.warns(RuntimeWarning, match="under-determined"):
        ...     warn_underdetermined("lime", torch.tensor([64, 10]), 50)
        >>> warn_underdetermined("lime", torch.tensor([10]), 50)  # enough samples: silent
    """
    most = int(counts.max()) if counts.numel() else 0
    if n_samples <= most + 1:
        warnings.warn(f"lightning_xai: {method} has {most} features for a probe but n_samples={n_samples}: the "
                      f"surrogate is under-determined (fewer samples than features + intercept) and its map is the "
                      f"fitting rule's choice, not the model's. Raise `n_samples` (at least {2 * (most + 1)}) or use "
                      "coarser features (`n_segments=` for images, `patch=` for spectrograms and clips).",
                      RuntimeWarning, stacklevel=3)
