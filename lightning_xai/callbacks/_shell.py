"""What every lightning_xai callback shares, probe-based or streaming: adapters, schedule, sinks, errors, steps."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import check_choice, check_choices, check_positive_int
from lightning_xai._inputs import Scorer
from lightning_xai.adapters import ModelInputs, default_batch_to_inputs, default_forward_fn, resolve_callable
from lightning_xai.callbacks._progress import Progress, progress, summary
from lightning_xai.callbacks._publish import publish
from lightning_xai.functional._fsdp import gathered
from lightning_xai.callbacks._shell_checks import check_name, check_output
from lightning_xai.functional._fingerprint import model_fingerprint
from lightning_xai.probe import forget_pools
from lightning_xai.sinks import ArtifactSink, Event
from lightning_xai.sinks._worker import figure_worker, flush_figures

__all__ = ["CallbackShell", "Stage"]

#: sharded strategies refused in ``setup`` (FSDP2 through ModelParallelStrategy works: functional/_fsdp.py)
SHARDED_REFUSED = ("FSDPStrategy", "DeepSpeedStrategy", "XLAFSDPStrategy")

Stage = Literal["fit", "validate", "test", "predict"]


class CallbackShell(Callback):
    """Common base: adapters, schedule, rank-zero sinks, checkpoint-aware steps and the ``on_error`` policy.

    Args:
        batch_to_inputs: callable (or dotted path) mapping a batch to :class:`~lightning_xai.adapters.ModelInputs`.
        forward_fn: callable (or dotted path) ``forward_fn(model, inputs: ModelInputs)`` returning the model output.
        output: which head of the model output to use: a key of a dict/``ModelOutput``, an index of a tuple, or a
            callable (or dotted path) mapping the whole output to a ``(batch, classes)`` tensor; default the
            ``logits`` entry, else the first tensor.
        class_names: names shown in plots instead of class indices.
        every_n_epochs: run every n-th validation epoch during ``fit``.
        stages: the runs to work in: ``"fit"`` (validation during fit), ``"validate"``, ``"test"``, and, when
            asked for, ``"predict"`` (the probe from the predict dataloader, no labels needed: ``target="pred"``).
        on_error: ``"warn"`` turns a failure inside the callback into a loud warning and training goes on;
            ``"raise"`` re-raises it.
        log_dir: where artifacts go (default: the trainer's ``log_dir``); files land under ``<log_dir>/xai``.
        name: the namespace of this instance's tags and folders (``xai/<name>/...``; default the callback's own,
            e.g. ``shap``): set it to run two of the same callback on one Trainer, e.g. ``name="shap_student"``.
        figures: ``"background"`` draws the figures in a separate process while training goes on (written by the
            end of ``fit``/``validate``/``test``, also when they stop on an error or Ctrl+C); ``"inline"`` draws
            them in the training loop at each explanation, as a debugger may prefer.
        render_every_n_epochs: during ``fit``, draw the figures only every n-th explained epoch (scalars, arrays
            and JSON every explained epoch); ``validate``/``test`` always draw them.

    Example:
        >>> CallbackShell(stages=("validate",)).stages
        ('validate',)
    """

    name: ClassVar[str] = "xai"
    allowed_stages: ClassVar[tuple[str, ...]] = ("fit", "validate", "test", "predict")
    progress_steps: ClassVar[int] = 1  # stages of one step on its progress line (see _advance)

    def __init__(
        self,
        batch_to_inputs: Callable[..., ModelInputs] | str | None = None,
        forward_fn: Callable[..., Any] | str | None = None,
        output: str | int | Callable[[Any], Tensor] | None = None,
        class_names: Sequence[str] | None = None,
        every_n_epochs: int = 1,
        stages: Sequence[Stage] = ("fit", "validate", "test"),
        on_error: Literal["warn", "raise"] = "warn",
        log_dir: str | None = None,
        name: str | None = None,
        figures: Literal["background", "inline"] = "background",
        render_every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        self.stages = check_choices("stages", stages, self.allowed_stages)
        self.on_error = check_choice("on_error", on_error, ("warn", "raise"))
        self.batch_to_inputs = resolve_callable("batch_to_inputs", batch_to_inputs) or default_batch_to_inputs
        self.forward_fn = resolve_callable("forward_fn", forward_fn) or default_forward_fn
        self.output = check_output(output)
        self.class_names = list(class_names) if class_names is not None else None
        self.log_dir = log_dir
        if name is not None:
            self.name = check_name(name)  # type: ignore[misc]
        self.figures = check_choice("figures", figures, ("background", "inline"))
        self.render_every_n_epochs = check_positive_int("render_every_n_epochs", render_every_n_epochs)
        self._ckpt_step: tuple[int, int] | None = None
        self._root: str | None = None
        self._id: dict[str, Any] = {}
        self._sinks: list[ArtifactSink] = []
        self._progress: Progress | None = None

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self._id)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = type(trainer.strategy).__name__
        if strategy in SHARDED_REFUSED:
            raise RuntimeError(
                f"{type(self).__name__} does not support the sharded strategy {strategy} (got strategy {strategy}): "
                "explanations need the whole model on every rank. Use strategy='ddp', or shard with FSDP2: "
                "ModelParallelStrategy(tensor_parallel_size=1) and fully_shard in configure_model (the model is "
                "gathered on every rank for the explanation), or remove the callback."
            )
        self._root = self.log_dir or trainer.log_dir or trainer.default_root_dir  # collective: every rank calls it
        self._check_model(trainer, pl_module)

    # ------------------------------------------------------------------ the epoch-end step
    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scheduled_step(trainer, pl_module)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scheduled_step(trainer, pl_module, testing=True)

    @override
    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._scheduled_step(trainer, pl_module)

    def _scheduled_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, testing: bool = False) -> None:
        stage = self._stage(trainer, testing)
        if stage is not None:
            self._epoch_end(trainer, pl_module, stage, self._step, trainer, pl_module, stage)

    def _step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        """The work of one scheduled epoch end (explain the probe, finish the metrics, fit the probes): each
        callback overrides it; :meth:`_epoch_end` wraps it in the ``on_error`` policy, progress and publishing."""

    # ---------------------------------------- figures drawn in the background; samples read once per stage's end
    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        flush_figures()

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        forget_pools()  # every callback has drawn its probe at this validation's epoch end
        if trainer.state.fn != TrainerFn.FITTING:  # during fit the figures are waited for at its end
            flush_figures()

    @override
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        forget_pools()
        flush_figures()

    @override
    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        forget_pools()
        flush_figures()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        forget_pools()
        flush_figures()  # KeyboardInterrupt or an error in the model: the completed epochs' figures are written

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        forget_pools()
        flush_figures()

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._ckpt_step = (int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))

    # ------------------------------------------------------------------ helpers for subclasses
    def _stage(self, trainer: pl.Trainer, testing: bool = False) -> Stage | None:
        """The stage to work in now, or ``None`` when the schedule says to skip (sanity check, off epochs)."""
        if trainer.sanity_checking:
            return None
        stage: Stage = "test" if testing else ("fit" if trainer.state.fn == TrainerFn.FITTING else "validate")
        if trainer.state.fn == TrainerFn.PREDICTING:
            stage = "predict"
        if stage not in self.stages or (stage == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs):
            return None
        return stage

    def _safely(self, trainer: pl.Trainer, stage: Stage, fn: Callable[..., Any], *args: Any,
                epoch: int | None = None) -> None:
        try:
            fn(*args)
        except Exception as err:
            if self.on_error == "raise":
                raise
            epoch = trainer.current_epoch if epoch is None else epoch  # a background explanation's own epoch
            rank_zero_warn(  # the whole traceback: the user's own frame (forward_fn, target, model) is deep in it
                f"lightning_xai: {type(self).__name__} failed during {stage} at epoch {epoch}: "
                f"{type(err).__name__}: {err}\nTraining goes on (on_error='warn'); pass on_error='raise' to stop "
                f"on this error.\n{traceback.format_exc()}",
                category=RuntimeWarning,
            )

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage,
                   fn: Callable[..., Any], *args: Any) -> None:
        """Run an epoch-end step (``on_error`` applies), then hand every scalar its sinks logged to Lightning."""
        self._sinks = []
        epoch, _ = self._when(trainer)
        label = f"{self.name} · {stage} epoch {epoch}"
        try:
            with progress(trainer, label, self.progress_steps) as self._progress:
                self._safely(trainer, stage, _gathered_call, pl_module, fn, *args)
        finally:
            sinks, self._sinks, done = self._sinks, [], self._progress
            self._progress = None
        if sinks:  # rank zero: what the step took, logged with its scalars, and one line saying it
            sinks[-1].scalar("seconds", done.seconds)
            counts = {k: sum(sink.counts[k] for sink in sinks) for k in ("files", "figures", "scalars")}
            summary(label, done.seconds, counts, self.figures)
        publish(trainer, pl_module, {k: v for sink in sinks for k, v in sink.published.items()})

    def _advance(self, what: str) -> None:
        """Move this step's progress line to ``what`` (a no-op outside a step or without a line)."""
        if self._progress is not None:
            self._progress.advance(what)

    def _when(self, trainer: pl.Trainer) -> tuple[int, int]:
        """Epoch and global step to log at; a checkpoint-only run logs at the checkpoint's own."""
        if trainer.state.fn != TrainerFn.FITTING and trainer.ckpt_path and self._ckpt_step is not None:
            return self._ckpt_step
        return trainer.current_epoch, trainer.global_step

    def _sink(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage,
              track: bool = True) -> ArtifactSink:
        """The sink for this event (rank zero only: it hashes the model and writes files); ``track``: published by
        this step (:meth:`_epoch_end`), else by whoever writes it later (an explanation alongside training)."""
        epoch, step = self._when(trainer)
        ckpt = trainer.ckpt_path if trainer.state.fn != TrainerFn.FITTING else None
        event = Event(self.name, stage, epoch, step, model_fingerprint(pl_module),
                      os.path.abspath(ckpt) if ckpt else None)
        # the sink logs the scalars when Lightning will not (fit), or not at this step (a checkpoint's): publish
        own = trainer.state.fn in (TrainerFn.FITTING, TrainerFn.PREDICTING) or not trainer.loggers or (
            (epoch, step) != (trainer.current_epoch, trainer.global_step))
        worker = figure_worker() if self.figures == "background" and trainer.is_global_zero else None
        explained = (trainer.current_epoch + 1) // self.every_n_epochs  # this is the n-th explained epoch of fit
        draw = stage != "fit" or explained % self.render_every_n_epochs == 0
        sink = ArtifactSink(trainer.loggers, self._root or trainer.default_root_dir, event,
                            strict=self.on_error == "raise", scalars_to_loggers=own, worker=worker,
                            draw_figures=draw)
        if track:
            self._sinks.append(sink)
        return sink

    @property
    def scorer(self) -> Scorer:
        """How this callback runs the model and reads its scores (``forward_fn`` and ``output``), for explainers."""
        return Scorer(self.forward_fn, self.output, type(self).__name__, attribution=hasattr(self, "target"))

    @property
    def artifact_root(self) -> str | None:
        """The folder artifacts go under (``<artifact_root>/xai``), known from ``setup`` on."""
        return self._root

    def _model_output(self, model: nn.Module, inputs: ModelInputs) -> Any:
        return self.forward_fn(model, inputs)

    def _logits(self, output: Any) -> Tensor:
        return self.scorer.logits(output, scoring=callable(getattr(self, "target", None)))

    def _class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def _check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the model and environment in ``setup``; raise with a clear message when it cannot work."""


def _gathered_call(pl_module: nn.Module, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` with an FSDP2-sharded model gathered on every rank (collective; see ``functional/_fsdp.py``)."""
    with gathered(pl_module):
        fn(*args)
