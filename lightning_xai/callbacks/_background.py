"""An explainer's background (SHAP's baselines): given by the user (``background=``) or drawn once from the
trainer's dataloaders.

Either way it is a :class:`~lightning_xai.probe.Probe` kept in the callback state, so reruns and checkpoint audits
use the very same one. A given background is read like a given probe (:func:`~lightning_xai.probe.probe_from_user`)
and checked against the probe's inputs before the first explanation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai._batch import batch_size_of, shape_signature
from lightning_xai._checks import expected
from lightning_xai.adapters import ModelInputs
from lightning_xai.probe import Probe, probe_from_dataloader, probe_from_user

if TYPE_CHECKING:
    from lightning_xai.callbacks._shell import Stage

__all__ = ["background_inputs", "check_background", "draw_background"]

_KINDS = "a tensor (single-input models), a batch-shaped tuple/dict of tensors like a dataloader batch, a torch " \
         "Dataset or a list of samples"


def check_background(background: Any) -> Any:
    """Refuse, in the constructor, a ``background`` that cannot hold samples or holds none.

    Example:
        >>> import torch
        >>> check_background(torch.zeros(16, 3, 8, 8)).shape[0]
        16
        >>> check_background(torch.zeros(0, 3))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected argument `background` to be at least one sample, ..., but got 'a tensor of shape (0, 3)'.
    """
    if background is None:
        return None
    if isinstance(background, Tensor):
        size = int(background.shape[0]) if background.dim() > 0 else 0
    elif isinstance(background, Dataset):
        size = len(background) if hasattr(background, "__len__") else 1  # type: ignore[arg-type]
    elif isinstance(background, (tuple, list, Mapping)):
        try:
            size = batch_size_of(background) if len(background) else 0
        except (TypeError, StopIteration, IndexError) as err:
            raise TypeError(expected("background", _KINDS, type(background).__name__)) from err
    else:
        raise TypeError(expected("background", _KINDS, type(background).__name__))
    if size == 0:
        got = (f"an empty {type(background).__name__}" if isinstance(background, Dataset)
               else f"a {_kind(background)} of shape {shape_signature(background)}")
        raise ValueError(expected("background", "at least one sample, batch first", got))
    return background


def _kind(obj: Any) -> str:
    return "tensor" if isinstance(obj, Tensor) else type(obj).__name__


def draw_background(trainer: pl.Trainer, stage: Stage, given: Any, n_background: int,
                    batch_to_inputs: Callable[..., ModelInputs]) -> Probe:
    """The user's background if ``given``, else ``n_background`` samples (class-balanced, deterministic) of the
    training dataloader (fit), else of the validation (or test) dataloader."""
    if given is not None:
        return probe_from_user(given, n_background, batch_to_inputs, argument="background", count_name=None)
    loader = None
    if stage == "fit" and trainer.train_dataloader is not None:  # the first of the user's training loaders
        loader = CombinedLoader(trainer.train_dataloader).flattened[0]
    if loader is None:
        loader = (trainer.test_dataloaders if stage == "test" else trainer.predict_dataloaders
                  if stage == "predict" else trainer.val_dataloaders)
        loader = loader[0] if isinstance(loader, (list, tuple)) else loader
    if loader is None:
        raise ValueError(expected("background", "given when the trainer has no dataloader to draw it from", None))
    return probe_from_dataloader(loader, n_background, batch_to_inputs, count_name="n_background", shared=True)


def _slots(inputs: ModelInputs) -> dict[str, Tensor]:
    return {**{f"input {i}": a for i, a in enumerate(inputs.args)}, **dict(inputs.kwargs)}


def _describe(inputs: ModelInputs) -> str:
    return ", ".join(f"{name} {tuple(t.shape[1:])}" for name, t in _slots(inputs).items())


def background_inputs(background: Probe, given: bool, inputs: ModelInputs,
                      prepare: Callable[[Probe], ModelInputs]) -> ModelInputs:
    """The background as model inputs like the probe's ``inputs`` (``prepare`` puts a probe on the model); a
    ``given`` one is checked against them.

    A bare tensor is the model's single input (whatever ``batch_to_inputs`` expects), in the probe's slot.
    """
    probe = _slots(inputs)
    if isinstance(background.batch, Tensor):
        if len(probe) != 1:
            raise ValueError(expected("background", f"a batch with the model's {len(probe)} inputs "
                                      f"({', '.join(probe)}) like the probe: a single tensor serves single-input "
                                      "models only", f"a tensor of shape {tuple(background.batch.shape)}"))
        (slot, like), bare = next(iter(probe.items())), background.batch.detach()
        bare = bare.to(like.device, like.dtype if bare.is_floating_point() and like.is_floating_point() else None)
        prepared = ModelInputs(args=(bare.clone(),)) if inputs.args else ModelInputs(kwargs={slot: bare.clone()})
    else:
        prepared = prepare(background)
    if not given:  # drawn from the data (or restored): it is what the engines always had
        return prepared
    found = _slots(prepared)
    same = list(found) == list(probe) and all(
        tuple(found[k].shape[1:]) == tuple(probe[k].shape[1:])
        and found[k].is_floating_point() == probe[k].is_floating_point()
        for k in probe
    )
    if not same:
        raise ValueError(expected("background", f"samples like the probe's: its inputs (shapes beyond the batch "
                                  f"dimension) are {_describe(inputs)}", f"inputs {_describe(prepared)}"))
    return prepared
