"""ProbingCallback's data steps: its arguments' checks, the targets of the probe set, the rows of each rank.

Concepts are columns of the batch: a key of a dict batch (``"colour"``) or a position in a tuple batch (``2``).
Before a dict batch goes to ``batch_to_inputs`` its concept keys are taken out, so the model is not handed them as
keyword arguments. Under DDP every rank runs its share of the probe (rows ``rank``, ``rank + world``, ...) and the
pooled activations are gathered into probe order on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import expected
from lightning_xai.adapters import ModelInputs
from lightning_xai.functional._layers import resolve_layer
from lightning_xai.functional.probing import POOLINGS, probe_layers

__all__ = ["check_concepts", "check_layers", "concept_name", "gather_rows", "probe_targets", "rank_rows",
           "without_concepts"]

Concept = str | int


def check_layers(layers: Any) -> tuple[str, ...] | str:
    """``layers=``: ``"auto"``, a dotted name or a non-empty list of them (checked against the model in setup)."""
    if layers == "auto":
        return "auto"
    names = (layers,) if isinstance(layers, str) else layers
    if not isinstance(names, Sequence) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(expected("layers", "'auto', a module name or a non-empty list of module names", layers))
    return tuple(dict.fromkeys(names))


def resolve_layers(model: nn.Module, layers: tuple[str, ...] | str) -> list[str]:
    """The probed layers' names as ``named_modules()`` spells them (``"layer4[-1]"`` -> ``"layer4.1"``), in the
    order given; a name that is no submodule is an error listing candidates."""
    if layers == "auto":
        return probe_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    return list(dict.fromkeys(names[id(resolve_layer(model, name, argument="layers"))] for name in layers))


def check_concepts(concepts: Any) -> tuple[Concept, ...]:
    """``concepts=``: ``None``, a column (key or position) or a list of them."""
    if concepts is None:
        return ()
    items = (concepts,) if isinstance(concepts, (str, int)) else concepts
    ok = isinstance(items, Sequence) and len(items) > 0 and all(
        (isinstance(c, str) and c) or (isinstance(c, int) and not isinstance(c, bool) and c >= 0) for c in items)
    if not ok:
        raise ValueError(expected("concepts", "None, a batch key or position, or a list of them", concepts))
    return tuple(dict.fromkeys(items))


def concept_name(concept: Concept) -> str:
    """The name a concept is logged under: its key, or ``column<i>`` for a tuple position."""
    return concept if isinstance(concept, str) else f"column{concept}"


def _column(batch: Any, concept: Concept) -> Tensor:
    if isinstance(batch, Mapping) and isinstance(concept, str):
        if concept not in batch:
            raise ValueError(expected("concepts", f"keys of the batch; it holds {sorted(map(str, batch))}", concept))
        value = batch[concept]
    elif isinstance(batch, (tuple, list)) and isinstance(concept, int):
        if concept >= len(batch):
            raise ValueError(expected("concepts", f"positions in the batch; it holds {len(batch)} entries", concept))
        value = batch[concept]
    else:
        what = f"a dict with keys {sorted(map(str, batch))}" if isinstance(batch, Mapping) else (
            f"a {type(batch).__name__} of {len(batch)} entries" if isinstance(batch, (tuple, list)) else
            f"a {type(batch).__name__}")
        raise TypeError(expected("concepts", f"keys of a dict batch or positions in a tuple batch; the batch is {what}",
                                 concept))
    tensor = torch.as_tensor(value) if not isinstance(value, Tensor) else value
    if tensor.dim() == 2 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() != 1 or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(expected("concepts", f"integer columns of the batch; {concept!r} is not one",
                                  f"{tensor.dtype} of shape {tuple(tensor.shape)}"))
    return tensor.cpu()


def without_concepts(batch: Any, concepts: Sequence[Concept]) -> Any:
    """A dict batch without its concept keys (the model is not called with them); other batches as they are."""
    if isinstance(batch, Mapping) and concepts:
        return {k: v for k, v in batch.items() if k not in concepts}
    return batch


def probe_targets(batch: Any, concepts: Sequence[Concept],
                  batch_to_inputs: Callable[[Any], ModelInputs]) -> dict[str, Tensor]:
    """``{target: (N,) labels}`` of the probe set: each concept's column, else the batch's labels."""
    if concepts:
        return {concept_name(c): _column(batch, c) for c in concepts}
    labels = batch_to_inputs(batch).labels
    if labels is None or labels.dim() != 1 or labels.is_floating_point():
        got = None if labels is None else f"{labels.dtype} of shape {tuple(labels.shape)}"
        raise ValueError(expected("batch_to_inputs", "a callable whose ModelInputs carry integer class labels (B,) to "
                                  "probe, or pass `concepts=` naming an integer column of the batch", got))
    return {"label": labels.cpu()}


def balance_on(concepts: Sequence[Concept],
               batch_to_inputs: Callable[[Any], ModelInputs]) -> Callable[[Any], ModelInputs]:
    """What the probe set is balanced on: the first concept's column, else the labels."""
    if not concepts:
        return batch_to_inputs
    return lambda batch: ModelInputs(labels=_column(batch, concepts[0]))


def rank_rows(n: int, rank: int, world: int) -> list[int]:
    """The probe rows this rank runs: ``rank, rank + world, ...`` (every row on every rank when ``n < world``)."""
    return list(range(n)) if world <= 1 or n < world else list(range(rank, n, world))


def gather_rows(local: Tensor, n: int, world: int, all_gather: Callable[[Tensor], Tensor]) -> Tensor:
    """Every rank's rows (from :func:`rank_rows`) gathered back into probe order ``(n, D)``; collective."""
    if world <= 1 or n < world:
        return local
    per = -(-n // world)
    padded = torch.zeros(per, *local.shape[1:], dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    gathered = all_gather(padded)  # (world, per, D)
    full = torch.empty(n, *local.shape[1:], dtype=local.dtype, device=local.device)
    for rank in range(world):
        count = len(range(rank, n, world))
        full[rank::world] = gathered[rank, :count]
    return full


def check_pooling(pooling: Any) -> str:
    if pooling not in POOLINGS:
        raise ValueError(expected("pooling", f"one of {list(POOLINGS)}", pooling))
    return str(pooling)
