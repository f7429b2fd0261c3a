"""The confidently-wrong gallery's image maps, computed on the ranks that hold its mistakes and gathered to rank zero
in the gallery's order.

After :func:`~lightning_xai.callbacks._calibration_ranks.gather_parts` every rank holds the same merged top-k
mistakes, each tagged with the rank it came from. Each rank explains the mistakes it held with the gallery's first
image explainer; the parts are gathered to rank zero, which joins them in the gallery's order
(:func:`~lightning_xai.explainers._rows.concat_explanations`) and draws with them. This is done only where a sample's
map does not depend on the rest of its batch (``Explainer.splits_on``) and the mistakes stack into one image batch;
otherwise rank zero explains them all in one batch when it draws (:meth:`Gallery.render`).

Each mistake is explained alone (a batch of one), in one process too: CPU and GPU kernels round differently for
batches of different sizes (Grad-CAM of a sample alone and in a batch of four differ by ~4e-7), enough to move a
colour level of the figure. Explained alone, a mistake's map is the same bits whichever rank held it and however
many ranks there are, so the figure of two processes is the bytes of one process's.

A rank whose explanation fails sends its error instead: every rank still reaches the gather (no hang), and rank zero
draws the gallery without maps, with a warning naming the rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist

from lightning_xai._inputs import Scorer
from lightning_xai.callbacks._gallery import Gallery, image_batch, image_sources, warn_no_maps
from lightning_xai.explainers import Explanation
from lightning_xai.explainers._rows import concat_explanations

__all__ = ["GalleryMaps", "explain_on_ranks", "explain_part"]


@dataclass(frozen=True)
class GalleryMaps:
    """What rank zero draws the gallery's images with: the explanation of every kept mistake in the gallery's
    order, or ``None`` (an explanation failed: drawn without maps)."""

    explanation: Explanation | None


@dataclass(frozen=True)
class _Failed:
    """A rank's failed share, sent in its place so that no rank waits for it."""

    rank: int
    message: str


def explain_on_ranks(gallery: Gallery, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     scorer: Scorer | None) -> GalleryMaps | None:
    """Explain the kept mistakes, each alone, on the ranks that hold them (collective under DDP: every rank calls
    it after the merge, with the same gallery; in one process this rank holds them all).

    Returns, on rank zero, the maps to draw with (``None`` where the split does not apply: the gallery explains its
    mistakes in one batch when it draws, as before); ``None`` on the other ranks.
    """
    sources = image_sources(gallery, trainer, pl_module, scorer) if image_batch(gallery.kept) is not None else []
    if not sources or not sources[0].explainer.splits_on(pl_module.device):
        return None  # the same decision on every rank: they hold the same merged mistakes and callbacks
    source, name = sources[0], sources[0].explainer.name
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank = dist.get_rank() if distributed else 0
    mine = [i for i, m in enumerate(gallery.kept) if m.rank == rank or not distributed]
    try:
        part: Any = [(i, explain_part(source, gallery.kept[i].inputs)) for i in mine]
    except Exception as err:  # the gallery is still useful without the maps
        if not distributed:
            warn_no_maps(name, err)  # as when the gallery explains them itself
            return GalleryMaps(None)
        part = _Failed(rank, f"{type(err).__name__}: {err}")  # every rank must reach the gather
    parts = _gathered(part) if distributed else [part]
    if parts is None:
        return None
    failed = [p for p in parts if isinstance(p, _Failed)]
    if failed:
        warn_no_maps(name, RuntimeError(f"rank {failed[0].rank} failed to explain the mistakes it held: "
                                        f"{failed[0].message}"))
        return GalleryMaps(None)
    rows = sorted((pair for p in parts for pair in p), key=lambda pair: pair[0])  # back to the gallery's order
    try:
        return GalleryMaps(concat_explanations([expl for _, expl in rows]))
    except (RuntimeError, TypeError, ValueError) as err:  # the mistakes' explanations disagree on a setting
        warn_no_maps(name, err)
        return GalleryMaps(None)


def explain_part(source: Any, batch: Any) -> Explanation:
    """``source``'s explanation of the predicted class of ``batch`` (one mistake this rank held)."""
    return source.explain(batch)


def _gathered(part: Any) -> list[Any] | None:
    """Every rank's part, in rank order, on rank zero; ``None`` on the other ranks (collective)."""
    parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(part, parts, dst=0)
    return parts
