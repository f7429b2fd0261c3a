"""The shell every lightning_xai callback shares: probe set, adapters, schedule, state, rank gating, errors.

Subclasses implement three small methods: ``_check_model`` (environment checks in ``setup``), ``_explain`` (pure
computation, called inside :func:`~lightning_xai.functional.explanation_mode`) and ``_emit`` (render and send to the
sink, rank zero only).
"""

from __future__ import annotations

import os
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import check_choice, check_choices, check_positive_int, expected
from lightning_xai.adapters import (
    ModelInputs,
    TargetSpec,
    default_batch_to_inputs,
    default_forward_fn,
    logits_from_output,
    move_to,
    resolve_callable,
    resolve_targets,
)
from lightning_xai.functional import explanation_mode
from lightning_xai.functional._fingerprint import model_fingerprint
from lightning_xai.probe import Probe, probe_from_dataloader, probe_from_user
from lightning_xai.sinks import ArtifactSink, Event

__all__ = ["XAICallback"]

Stage = Literal["fit", "validate", "test"]
_SHARDED = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy", "XLAFSDPStrategy")


class XAICallback(Callback, ABC):
    """Base class of every explanation callback.

    Args:
        num_samples: how many probe samples to explain, taken once (class-balanced, deterministic) from the
            validation (or test) dataloader's dataset.
        probe: explain these inputs instead: a batch-shaped tuple/dict of tensors such as ``(x, y)`` or
            ``(x, y, mask)``, or a ``Dataset``.
        batch_to_inputs: callable (or dotted path) mapping a batch to :class:`~lightning_xai.adapters.ModelInputs`.
        forward_fn: callable (or dotted path) ``forward_fn(model, inputs: ModelInputs)`` returning the model output.
        target: what to explain: ``"pred"`` (predicted class), ``"label"``, a class index, or a callable (or dotted
            path) mapping the model output to one score per sample (regression, CTC, segmentation region...).
        output: which entry of a dict/tuple model output holds the logits (key or index); default ``logits``/first.
        class_names: names shown in plot titles instead of class indices.
        every_n_epochs: explain every n-th validation epoch during ``fit``.
        stages: the runs to explain in: ``"fit"`` (validation during fit), ``"validate"``, ``"test"``.
        on_error: ``"warn"`` turns a failure inside the callback into a loud warning and training goes on;
            ``"raise"`` re-raises it.
        log_dir: where artifacts go (default: the trainer's ``log_dir``); files land under ``<log_dir>/xai``.

    Example:
        >>> class Mean(XAICallback):
        ...     name = "mean"
        ...     def _explain(self, model, inputs):
        ...         return inputs.args[0].mean()
        ...     def _emit(self, result, inputs, probe, sink):
        ...         sink.scalar("input_mean", float(result))
        >>> Mean(num_samples=4).state_key
        "Mean{'num_samples': 4, 'target': 'pred'}"
    """

    name: ClassVar[str] = "xai"

    def __init__(
        self,
        num_samples: int = 8,
        probe: Any = None,
        batch_to_inputs: Callable[..., ModelInputs] | str | None = None,
        forward_fn: Callable[..., Any] | str | None = None,
        target: TargetSpec = "pred",
        output: str | int | None = None,
        class_names: Sequence[str] | None = None,
        every_n_epochs: int = 1,
        stages: Sequence[Stage] = ("fit", "validate", "test"),
        on_error: Literal["warn", "raise"] = "warn",
        log_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.num_samples = check_positive_int("num_samples", num_samples)
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        self.stages = check_choices("stages", stages, ("fit", "validate", "test"))
        self.on_error = check_choice("on_error", on_error, ("warn", "raise"))
        self.batch_to_inputs = resolve_callable("batch_to_inputs", batch_to_inputs) or default_batch_to_inputs
        self.forward_fn = resolve_callable("forward_fn", forward_fn) or default_forward_fn
        if isinstance(target, str) and target not in ("pred", "label"):
            target = resolve_callable("target", target)  # type: ignore[assignment]
        elif not (callable(target) or isinstance(target, str) or (isinstance(target, int) and target >= 0)):
            raise ValueError(expected("target", "'pred', 'label', a class index >= 0 or a callable", target))
        self.target = target
        self.output = output
        self.class_names = list(class_names) if class_names is not None else None
        self.log_dir = log_dir
        self._user_probe = probe
        self._probe: Probe | None = None
        self._ckpt_step: tuple[int, int] | None = None
        self._root: str | None = None
        self._id = {"num_samples": num_samples, "target": target if not callable(target) else target.__name__}

    # ------------------------------------------------------------------ Lightning hooks
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self._id)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        strategy = type(trainer.strategy).__name__
        if strategy in _SHARDED:
            raise RuntimeError(
                f"{type(self).__name__} does not support sharded strategies yet (got strategy {strategy}): "
                "explanations need the whole model on every rank. Use strategy='ddp' or remove the callback."
            )
        self._root = self.log_dir or trainer.log_dir or trainer.default_root_dir  # collective: every rank calls it
        self._check_model(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        stage: Stage = "fit" if trainer.state.fn == TrainerFn.FITTING else "validate"
        if stage not in self.stages or (stage == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs):
            return
        self._safely(trainer, pl_module, stage)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "test" in self.stages:
            self._safely(trainer, pl_module, "test")

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._ckpt_step = (int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "probe": None if self._probe is None else self._probe.state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None and self._user_probe is None:
            self._probe = Probe.from_state(state_dict["probe"])

    # ------------------------------------------------------------------ the shell
    def _safely(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        try:
            self._run(trainer, pl_module, stage)
        except Exception as err:
            if self.on_error == "raise":
                raise
            rank_zero_warn(
                f"lightning_xai: {type(self).__name__} failed during {stage} at epoch {trainer.current_epoch}: "
                f"{type(err).__name__}: {err}\nTraining goes on (on_error='warn'); pass on_error='raise' to stop "
                f"on this error.\n{traceback.format_exc(limit=4)}",
                category=RuntimeWarning,
            )

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        probe = self._get_probe(trainer, stage)
        with explanation_mode(pl_module):
            inputs = self._prepare(probe, pl_module)
            result = self._explain(pl_module, inputs)
        if not trainer.is_global_zero:
            return
        epoch, step = self._when(trainer)
        ckpt = trainer.ckpt_path if trainer.state.fn != TrainerFn.FITTING else None
        event = Event(self.name, stage, epoch, step, model_fingerprint(pl_module), os.path.abspath(ckpt) if ckpt else None)
        sink = ArtifactSink(trainer.loggers, self._root or trainer.default_root_dir, event)
        self._emit(result, inputs.to("cpu"), probe, sink)

    def _when(self, trainer: pl.Trainer) -> tuple[int, int]:
        """Epoch and global step to log at; a checkpoint-only run logs at the checkpoint's own."""
        if trainer.state.fn != TrainerFn.FITTING and trainer.ckpt_path and self._ckpt_step is not None:
            return self._ckpt_step
        return trainer.current_epoch, trainer.global_step

    def _get_probe(self, trainer: pl.Trainer, stage: Stage) -> Probe:
        if self._probe is None:
            if self._user_probe is not None:
                self._probe = probe_from_user(self._user_probe, self.num_samples, self.batch_to_inputs)
            else:
                loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
                if isinstance(loaders, (list, tuple)):
                    loaders = loaders[0] if loaders else None
                if loaders is None:
                    raise ValueError(
                        expected("probe", f"given when the trainer has no {stage} dataloader to draw from", None)
                    )
                self._probe = probe_from_dataloader(loaders, self.num_samples, self.batch_to_inputs)
        return self._probe

    def _prepare(self, probe: Probe, model: nn.Module) -> ModelInputs:
        """The probe as model inputs: cloned out of inference mode, on the model's device, floats in its dtype."""
        param = next((p for p in model.parameters() if p.is_floating_point()), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32

        def fresh(t: Any) -> Any:
            if not isinstance(t, Tensor):
                return t
            t = t.detach().to(device).clone()
            return t.to(dtype) if t.is_floating_point() else t

        inputs = self.batch_to_inputs(move_to(probe.batch, "cpu"))
        return ModelInputs(
            tuple(fresh(a) for a in inputs.args),
            {k: fresh(v) for k, v in inputs.kwargs.items()},
            fresh(inputs.labels),
            fresh(inputs.mask),
        )

    # ------------------------------------------------------------------ helpers for subclasses
    def _model_output(self, model: nn.Module, inputs: ModelInputs) -> Any:
        return self.forward_fn(model, inputs)

    def _logits(self, output: Any) -> Tensor:
        return logits_from_output(output, self.output)

    def _targets(self, logits: Tensor, inputs: ModelInputs) -> Tensor:
        return resolve_targets(logits, self.target, inputs.labels)  # type: ignore[arg-type]

    def _class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    # ------------------------------------------------------------------ to implement
    def _check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the model and environment in ``setup``; raise with a clear message when it cannot work."""

    @abstractmethod
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> Any:
        """Compute the explanation. Runs inside ``explanation_mode`` on every rank; returns tensors."""

    @abstractmethod
    def _emit(self, result: Any, inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        """Render ``result`` and hand it to ``sink`` (rank zero only)."""
