"""The probe-based callbacks' side of explaining alongside training (see callbacks/_overlap.py for the rules).

:class:`Overlapping` is mixed into :class:`~lightning_xai.callbacks.XAICallback`: at a scheduled ``fit`` epoch end
it copies the model, checks the copy, and hands the explanation to the background thread; the main loop picks the
result up at a training step, the next explanation, ``explain()``, the end of fit, an error, Ctrl+C or teardown,
and writes it with the sink made at the epoch end (the epoch's step and model hash).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from typing_extensions import override

from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks._overlap import Job, draws_random, refusal, same_outputs, snapshot, submit
from lightning_xai.callbacks._progress import summary
from lightning_xai.callbacks._publish import publish
from lightning_xai.callbacks._shell import CallbackShell, Stage
from lightning_xai.functional import explanation_mode
from lightning_xai.functional._guard import rng_left_alone
from lightning_xai.probe import Probe

__all__ = ["Overlapping"]


class Overlapping(CallbackShell):
    """Explain a ``fit`` epoch's probe on a copy of the model while the next epoch trains (``overlap``).

    Subclasses provide ``_explainers``, ``_prepare``, ``_set_background``, ``_explain``, ``_emit`` (as
    :class:`~lightning_xai.callbacks.XAICallback` does) and set ``overlap`` (``"auto"``, ``True``, ``False``).

    Example:
        >>> from lightning_xai import SHAPCallback
        >>> SHAPCallback(overlap=False).overlap
        False
    """

    overlap: bool | str = False
    _job: Job | None = None
    _told: bool = False

    # ------------------------------------------------------------------ picking results up
    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._collect(trainer, block=False)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._collect(trainer, block=True)
        super().on_fit_end(trainer, pl_module)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._collect(trainer, block=True)  # the completed epoch's explanation is written, then its figures
        super().on_exception(trainer, pl_module, exception)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._collect(trainer, block=True)
        super().teardown(trainer, pl_module, stage)

    def _collect(self, trainer: pl.Trainer, block: bool) -> None:
        """Write the background explanation if it is done (``block``: wait for it)."""
        job = self._job
        if job is None or not (block or job.future.done()):
            return
        self._job = None
        self._safely(trainer, job.context["stage"], self._finish, trainer, job, epoch=job.epoch)

    def _finish(self, trainer: pl.Trainer, job: Job) -> None:
        result, seconds = job.future.result()  # raises the explanation's error, with its traceback
        sink, label = job.context["sink"], job.context["label"]
        self._emit(result, job.context["inputs"].to("cpu"), job.context["probe"], sink)
        sink.scalar("seconds", seconds)
        summary(f"{label} (explained alongside training)", seconds, sink.counts, self.figures)
        # the sink logged them at the epoch's step; Lightning's metrics hold them from now on (nothing monitors them)
        publish(trainer, trainer.lightning_module, sink.published)

    # ------------------------------------------------------------------ handing an explanation over
    def _overlapped(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage, probe: Probe) -> bool:
        """Hand this epoch's explanation to the background thread; ``False`` (and a one-time warning when
        ``overlap=True`` was asked for) when it must run here."""
        explainers = self._explainers()  # type: ignore[attr-defined]
        why = refusal(self.overlap, trainer, pl_module, stage, self.on_error,
                      bool(explainers) and all(e.overlappable for e in explainers))
        copied: tuple[nn.Module, ModelInputs] | None = None
        if why is None:
            why, copied = self._checked_copy(trainer, pl_module, probe)
        if why is not None or copied is None:
            if self.overlap is True and stage == "fit" and not self._told:
                self._told = True
                rank_zero_warn(f"lightning_xai: {type(self).__name__}(overlap=True) explains in the training loop: "
                               f"{why}.", category=RuntimeWarning)
            return False
        model, inputs = copied
        sink = self._sink(trainer, pl_module, stage, track=False)
        epoch = self._when(trainer)[0]
        self._job = submit(partial(self._explain_copy, model, inputs), epoch, sink=sink, inputs=inputs, probe=probe,
                           stage=stage, label=f"{self.name} · {stage} epoch {epoch}")
        return True

    def _checked_copy(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                      probe: Probe) -> tuple[str | None, tuple[nn.Module, ModelInputs] | None]:
        """A copy of the model and the probe inputs, or why not: the model's forward must not draw from the global
        random streams, and the copy must compute the model's outputs on the probe."""
        with explanation_mode(pl_module):
            inputs = self._prepare(probe, pl_module)  # type: ignore[attr-defined]
            with torch.no_grad():
                live, drew = draws_random(lambda: self.forward_fn(pl_module, inputs))
        if drew:
            return ("the model's forward (or forward_fn) in eval mode draws from the global random streams, which a "
                    "thread cannot restore while training draws from them"), None
        try:
            model = snapshot(pl_module, trainer)
        except Exception as err:  # an attribute that cannot be copied (a lock, an open file, ...)
            return f"the model cannot be deep-copied ({type(err).__name__}: {err})", None
        with explanation_mode(model), torch.no_grad():
            copied = self.forward_fn(model, inputs)
        if not same_outputs(live, copied):
            return "a deep copy of the model does not compute the model's outputs on the probe", None
        return None, (model, inputs)

    def _explain_copy(self, model: nn.Module, inputs: ModelInputs) -> Any:
        """The background thread's work: the callback's explanation of the copy (the global RNG is not touched:
        the copy's forward was checked not to draw from it, and explainers that may overlap do not)."""
        with rng_left_alone(), explanation_mode(model):  # nested guards (the engines') leave it alone too
            self._set_background(model, inputs)  # type: ignore[attr-defined]
            return self._explain(model, inputs)  # type: ignore[attr-defined]
