"""Handing a step's scalars to Lightning: ``trainer.callback_metrics`` / ``logged_metrics``, or ``log`` in
validate/test."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn

__all__ = ["publish"]


def publish(trainer: pl.Trainer, pl_module: pl.LightningModule, values: dict[str, float]) -> None:
    """Hand the scalars to Lightning, on every rank with rank zero's values.

    They land in ``trainer.callback_metrics`` (``ModelCheckpoint``/``EarlyStopping`` monitor them in the same
    epoch) and ``trainer.logged_metrics``. During ``fit`` (and ``predict``) the sink has logged them at the
    event's step, so they are put in those two dicts directly. In ``validate``/``test`` they are
    logged through Lightning (``logger=True``), so the list those return and the results table they print show
    them; a checkpoint-only run is the one with two copies: Lightning logs every metric of
    ``validate(ckpt_path=...)`` at step 0 (it does not restore the loop state), and the sink also wrote them at
    the checkpoint's own step, where the audit's images are (see ``CallbackShell._sink``).
    """
    if trainer.world_size > 1:  # collective: rank zero computed them, every rank must hold the same values
        values = trainer.strategy.broadcast(values, src=0)
    fitting = trainer.state.fn == TrainerFn.FITTING
    if trainer.state.fn == TrainerFn.PREDICTING or (fitting and values):
        # the sink logged them; Lightning's own `log` would add nothing but its cost (a result object per key,
        # reset and moved every epoch: ~1 ms a scalar); predict has no `log` at all
        tensors = {k: torch.tensor(float(v)) for k, v in values.items()}
        trainer.callback_metrics.update(tensors)
        if fitting:
            trainer.logged_metrics.update(tensors)
        return
    through = not fitting and bool(trainer.loggers)  # logger=True without a logger is a Lightning warning
    for key, value in values.items():
        pl_module.log(key, float(value), on_step=False, on_epoch=True, prog_bar=False, logger=through,
                      add_dataloader_idx=False, batch_size=1, sync_dist=trainer.world_size > 1)
    if values and not through:
        trainer.logged_metrics.update({k: torch.tensor(float(v)) for k, v in values.items()})
