"""The probe-based shell: explain a fixed probe set every scheduled epoch, on every rank; rank zero writes.

Subclasses implement ``_explain`` (pure computation, called inside
:func:`~lightning_xai.functional.explanation_mode`), ``_emit`` (render and send to the sink, rank zero only) and
optionally ``_check_model`` (environment checks in ``setup``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._batch import move_to
from lightning_xai._checks import check_positive_int, expected
from lightning_xai.adapters import ModelInputs, TargetSpec, resolve_callable, resolve_targets
from lightning_xai.callbacks._shell import CallbackShell, Stage
from lightning_xai.functional import explanation_mode
from lightning_xai.probe import Probe, probe_from_dataloader, probe_from_user
from lightning_xai.sinks import ArtifactSink

__all__ = ["XAICallback", "Stage"]


class XAICallback(CallbackShell, ABC):
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
        output: which head of the model output: a key, a tuple index, or a callable (or dotted path) mapping the
            output to ``(batch, classes)`` logits; default the ``logits`` entry, else the first tensor.
        class_names: names shown in plot titles instead of class indices.
        every_n_epochs: explain every n-th validation epoch during ``fit``.
        stages: the runs to explain in: ``"fit"`` (validation during fit), ``"validate"``, ``"test"``.
        on_error: ``"warn"`` turns a failure inside the callback into a loud warning and training goes on;
            ``"raise"`` re-raises it.
        log_dir: where artifacts go (default: the trainer's ``log_dir``); files land under ``<log_dir>/xai``.
        name: namespace of this instance's tags and folders (default the callback's, e.g. ``gradcam``); give two
            callbacks of one kind on one Trainer different names (e.g. ``output="student", name="shap_student"``).

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

    def __init__(
        self,
        num_samples: int = 8,
        probe: Any = None,
        batch_to_inputs: Callable[..., ModelInputs] | str | None = None,
        forward_fn: Callable[..., Any] | str | None = None,
        target: TargetSpec = "pred",
        output: str | int | Callable[[Any], Tensor] | None = None,
        class_names: Sequence[str] | None = None,
        every_n_epochs: int = 1,
        stages: Sequence[Stage] = ("fit", "validate", "test"),
        on_error: Literal["warn", "raise"] = "warn",
        log_dir: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(batch_to_inputs, forward_fn, output, class_names, every_n_epochs, stages, on_error, log_dir,
                         name)
        self.num_samples = check_positive_int("num_samples", num_samples)
        if isinstance(target, str) and target not in ("pred", "label"):
            target = resolve_callable("target", target)  # type: ignore[assignment]
        elif not (callable(target) or isinstance(target, str) or (isinstance(target, int) and target >= 0)):
            raise ValueError(expected("target", "'pred', 'label', a class index >= 0 or a callable", target))
        self.target = target
        self._user_probe = probe
        self._probe: Probe | None = None
        self._id = {"num_samples": num_samples, "target": target if not callable(target) else target.__name__,
                    **({"name": name} if name is not None else {})}

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stage = self._stage(trainer)
        if stage is not None:
            self._epoch_end(trainer, pl_module, stage, self._run, trainer, pl_module, stage)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stage = self._stage(trainer, testing=True)
        if stage is not None:
            self._epoch_end(trainer, pl_module, stage, self._run, trainer, pl_module, stage)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "probe": None if self._probe is None else self._probe.state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None and self._user_probe is None:
            self._probe = Probe.from_state(state_dict["probe"])

    # ------------------------------------------------------------------ the shell
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        probe = self._get_probe(trainer, stage)
        with explanation_mode(pl_module):
            inputs = self._prepare(probe, pl_module)
            result = self._explain(pl_module, inputs)
        if trainer.is_global_zero:
            self._emit(result, inputs.to("cpu"), probe, self._sink(trainer, pl_module, stage))

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
    def _targets(self, logits: Tensor, inputs: ModelInputs) -> Tensor:
        return resolve_targets(logits, self.target, inputs.labels)  # type: ignore[arg-type]

    def _titles(self, result: dict[str, Any], inputs: ModelInputs, probe: Probe) -> list[str]:
        """Tile titles: dataset index, true label, predicted label and confidence (from ``result``)."""
        titles = []
        for i in range(len(probe)):
            parts = [f"#{probe.indices[i]}" if probe.indices[i] >= 0 else f"probe {i}"]
            if inputs.labels is not None and inputs.labels.dim() == 1:
                parts.append(f"true: {self._class_name(int(inputs.labels[i]))}")
            if result.get("pred") is not None:
                parts.append(f"pred: {self._class_name(int(result['pred'][i]))} ({float(result['confidence'][i]):.2f})")
            titles.append(" | ".join(parts))
        return titles

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> Any:
        """Compute the explanation. Runs inside ``explanation_mode`` on every rank; returns tensors."""

    @abstractmethod
    def _emit(self, result: Any, inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        """Render ``result`` and hand it to ``sink`` (rank zero only)."""
