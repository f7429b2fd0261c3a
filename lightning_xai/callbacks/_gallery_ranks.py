"""The confidently-wrong gallery across DDP ranks: the maps of the merged mistakes are computed on the ranks that
hold them, and gathered to rank zero in the gallery's order.

After :func:`~lightning_xai.callbacks._calibration_ranks.gather_parts` every rank holds the same merged top-k
mistakes, each tagged with the rank it came from. Each rank explains the mistakes it held (one batch, possibly
empty) with the gallery's first image explainer; the parts are gathered and rank zero puts their rows back in the
gallery's order (:func:`~lightning_xai.explainers._rows.reorder_rows`). This is done only where a sample's map does
not depend on the rest of its batch (``Explainer.splits_on``) and the mistakes stack into one image batch;
otherwise rank zero explains them all, as in one process. A rank whose part fails sends its error, every rank still
reaches the gather (no hang), and rank zero draws the gallery without maps with a warning naming the rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist

from lightning_xai._inputs import Scorer
from lightning_xai.callbacks._gallery import Gallery, image_batch, image_sources, warn_no_maps
from lightning_xai.explainers import Explanation
from lightning_xai.explainers._rows import concat_explanations, reorder_rows

__all__ = ["GalleryMaps", "explain_on_ranks"]


@dataclass(frozen=True)
class GalleryMaps:
    """What rank zero draws the gallery with: the explanation of every kept mistake in the gallery's order, or
    ``None`` (a rank failed: drawn without maps)."""

    explanation: Explanation | None


def explain_on_ranks(gallery: Gallery, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     scorer: Scorer | None) -> GalleryMaps | None:
    """Explain the kept mistakes on the ranks that hold them (collective: every rank calls it, after the merge).

    Returns, on rank zero, the maps to draw with (``None`` where the split does not apply: rank zero explains them
    all itself, as before); ``None`` on the other ranks.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    batch = image_batch(gallery.kept)
    sources = image_sources(gallery, trainer, pl_module, scorer) if batch is not None else []
    if not sources or not sources[0].explainer.splits_on(pl_module.device):
        return None  # the same decision on every rank: they hold the same merged mistakes and callbacks
    rank = dist.get_rank()
    mine = [i for i, m in enumerate(gallery.kept) if m.rank == rank]
    part: Any = None
    if mine:
        held = image_batch([gallery.kept[i] for i in mine])
        try:
            part = (mine, explain_part(sources[0], held))
        except Exception as err:  # every rank must reach the gather
            part = _Failed(rank, f"{type(err).__name__}: {err}")
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    if rank != 0:
        return None
    failed = [p for p in parts if isinstance(p, _Failed)]
    if failed:
        name = sources[0].explainer.name
        warn_no_maps(name, RuntimeError(f"rank {failed[0].rank} failed to explain the mistakes it held: "
                                        f"{failed[0].message}"))
        return GalleryMaps(None)
    held_parts = [p for p in parts if p is not None]
    rows = [i for positions, _ in held_parts for i in positions]
    joined = concat_explanations([expl for _, expl in held_parts])
    order = sorted(range(len(rows)), key=lambda r: rows[r])  # back to the gallery's order
    return GalleryMaps(reorder_rows(joined, order))


def explain_part(source: Any, batch: Any) -> Explanation:
    """One rank's share: ``source``'s explanation of the predicted class of the mistakes it held."""
    return source.explain(batch)


@dataclass(frozen=True)
class _Failed:
    rank: int
    message: str
