"""The probe-based shell: explain a fixed probe set every scheduled epoch, on every rank; rank zero writes.

Under DDP each rank explains its share of the probe where the explainer allows it (``Explainer.splittable``) and
the parts are gathered to every rank (:mod:`~lightning_xai.callbacks._split`); subclasses run their explainers
through :meth:`XAICallback._explain_with` for that.

A callback holds an :class:`~lightning_xai.explainers.Explainer` (its public, read-only ``explainer``) and
implements ``_emit`` (render and send to the sink, rank zero only); ``_explain`` (inside
:func:`~lightning_xai.functional.explanation_mode`) runs the explainer on the probe and may add to the result.
Explainers that want baselines from the data (``explainer.n_background > 0``) get a background drawn once here,
kept in the state like the probe. Other callbacks (the calibration gallery) explain their own inputs through the
public :meth:`XAICallback.explain`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._batch import move_to
from lightning_xai._checks import check_positive_int, expected
from lightning_xai._inputs import on_model
from lightning_xai.adapters import ModelInputs, TargetSpec, resolve_callable, resolve_targets
from lightning_xai.callbacks._background import background_inputs, check_background, draw_background
from lightning_xai.callbacks._overlap_steps import Overlapping
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks._split import ProbeSplit, explain_split
from lightning_xai.explainers import Explainer, Explanation
from lightning_xai.functional import explanation_mode
from lightning_xai.functional._fsdp import gathered
from lightning_xai.probe import Probe, probe_from_dataloader, probe_from_user
from lightning_xai.sinks import ArtifactSink

__all__ = ["XAICallback", "Stage"]


class XAICallback(Overlapping, ABC):
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
        figures: ``"background"`` (default) draws the figures in a separate process while training goes on;
            ``"inline"`` in the training loop (see :class:`~lightning_xai.CallbackShell`).
        render_every_n_epochs: during ``fit``, draw the figures only every n-th explained epoch (the arrays,
            scalars and JSON every explained epoch).
        explainer: the :class:`~lightning_xai.explainers.Explainer` to run (subclasses build theirs).
        background: baselines for an explainer that wants them (``explainer.n_background > 0``) instead of
            drawing them from the data: a tensor, a batch-shaped tuple/dict or a ``Dataset``.
        overlap: during ``fit``, explain a deep copy of the model in a background thread while the next epoch
            trains (artifacts and scalars at the epoch's own step; see ``callbacks/_overlap.py``). ``"auto"``
            (default) where it is safe and can pay: one process, model on the CPU up to 256 MiB, a spare core,
            ``on_error="warn"``, nothing monitoring an ``xai/`` metric, an explainer that allows it
            (``Explainer.overlappable``); ``True`` wherever it is safe (else a warning); ``False`` never.

    Example:
        >>> from lightning_xai.explainers import get_explainer
        >>> class MeanMap(XAICallback):
        ...     name = "mean_map"
        ...     def _emit(self, result, inputs, probe, sink):
        ...         sink.scalar("mean", float(result.values["input"].mean()))
        >>> cb = MeanMap(num_samples=4, explainer=get_explainer("gradcam"))
        >>> cb.state_key, cb.explainer.method
        ("MeanMap{'num_samples': 4, 'target': 'pred'}", 'gradcam')
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
        figures: Literal["background", "inline"] = "background",
        render_every_n_epochs: int = 1,
        explainer: Explainer | None = None,
        background: Any = None,
        overlap: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__(batch_to_inputs=batch_to_inputs, forward_fn=forward_fn, output=output,
                         class_names=class_names, every_n_epochs=every_n_epochs, stages=stages, on_error=on_error,
                         log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs)
        if overlap not in (True, False, "auto"):
            raise ValueError(expected("overlap", "True, False or 'auto'", overlap))
        self.overlap = overlap
        self._explainer = explainer
        self._user_background = check_background(background)
        self._background: Probe | None = None
        self.num_samples = check_positive_int("num_samples", num_samples)
        if isinstance(target, str) and target not in ("pred", "label"):
            target = resolve_callable("target", target)  # type: ignore[assignment]
        elif not (callable(target) or isinstance(target, str) or (isinstance(target, int) and target >= 0)):
            raise ValueError(expected("target", "'pred', 'label', a class index >= 0 or a callable", target))
        self.target = target
        self._user_probe = probe
        self._probe: Probe | None = None
        self._split = ProbeSplit()  # this rank's share of the probe while a step explains it
        self._id = {"num_samples": num_samples, "target": target if not callable(target) else target.__name__,
                    **({"name": name} if name is not None else {})}

    progress_steps = 3  # probe, explanation, artifacts

    # ------------------------------------------------------------------ Lightning hooks
    @property
    def explainer(self) -> Explainer | None:
        """The explainer this callback runs (read-only; ``None`` until decided, e.g. drift's ``method="auto"``)."""
        return self._explainer

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"version": 1, "probe": None if self._probe is None else self._probe.state()}
        if self._background is not None:
            state["background"] = self._background.state()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None and self._user_probe is None:
            self._probe = Probe.from_state(state_dict["probe"])
        if state_dict.get("background") is not None and self._user_background is None:
            self._background = Probe.from_state(state_dict["background"])

    # ------------------------------------------------------------------ explaining
    def explain(self, trainer: pl.Trainer, pl_module: pl.LightningModule, inputs: ModelInputs,
                target: Any = None) -> Explanation:
        """Explain ``inputs`` (any batch, e.g. the gallery's mistakes) with this callback's explainer, its
        ``forward_fn``/``output`` and background, for ``target`` (default this callback's own). Runs inside
        ``explanation_mode``; the model is left as it was. A model sharded by FSDP2 is gathered for the call
        (collective: outside a callback's step, call it on every rank)."""
        if self._explainer is None:
            raise RuntimeError(f"lightning_xai: {type(self).__name__} has no explainer yet (it is decided at its "
                               "first explanation).")
        self._collect(trainer, block=True)  # its explainer is free again
        stage = _stage_of(trainer)
        self._ensure_background(trainer, stage)
        with gathered(pl_module), explanation_mode(pl_module):
            batch = on_model(inputs, pl_module)
            self._set_background(pl_module, batch)
            return self._explainer.explain(pl_module, batch, self.target if target is None else target, self.scorer)

    def explain_all(self, trainer: pl.Trainer, pl_module: pl.LightningModule, inputs: ModelInputs,
                    target: Any = None) -> dict[str, Explanation]:
        """Explain ``inputs`` with every method this callback runs (an :class:`AttributionCallback`'s several, one
        otherwise), by method name, as :meth:`explain` does for one: another callback compares its own maps with
        these (AttentionCallback's agreement with the attribution methods on the same Trainer)."""
        self._collect(trainer, block=True)
        stage = _stage_of(trainer)
        self._ensure_background(trainer, stage)
        with gathered(pl_module), explanation_mode(pl_module):
            batch = on_model(inputs, pl_module)
            self._set_background(pl_module, batch)
            chosen = self.target if target is None else target
            return {m: e.explain(pl_module, batch, chosen, self.scorer) for m, e in self._named_explainers().items()}

    def _explainers(self) -> list[Explainer]:
        """Every explainer this callback runs (one by default)."""
        return [] if self._explainer is None else [self._explainer]

    def _named_explainers(self) -> dict[str, Explainer]:
        """Every explainer this callback runs, by the method name its artifacts carry."""
        return {e.name: e for e in self._explainers()}

    def _ensure_background(self, trainer: pl.Trainer, stage: Stage) -> None:
        wanted = max((e.n_background for e in self._explainers()), default=0)
        if wanted > 0 and self._background is None:
            self._background = draw_background(trainer, stage, self._user_background, wanted, self.batch_to_inputs)

    def _set_background(self, model: nn.Module, inputs: ModelInputs) -> None:
        """Hand the explainers that want one the background as model inputs like ``inputs`` (call inside
        ``explanation_mode``)."""
        takers = [e for e in self._explainers() if e.n_background > 0]
        if takers and self._background is not None:
            background = background_inputs(
                self._background, self._user_background is not None, inputs,
                lambda probe: on_model(self.batch_to_inputs(move_to(probe.batch, "cpu")), model))
            for explainer in takers:
                explainer.background = background

    # ------------------------------------------------------------------ the shell
    def _step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        self._run(trainer, pl_module, stage)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        self._collect(trainer, block=True)  # the previous epoch's, if it still runs alongside training
        probe = self._get_probe(trainer, stage)
        self._ensure_background(trainer, stage)
        self._advance("probe")
        if self._overlapped(trainer, pl_module, stage, probe):
            self._advance("explaining alongside training")
            return
        self._split = ProbeSplit.current(trainer.world_size, trainer.global_rank)
        try:
            with explanation_mode(pl_module):
                inputs = self._prepare(probe, pl_module)
                self._set_background(pl_module, inputs)
                result = self._explain(pl_module, inputs)
        finally:
            self._split = ProbeSplit()
        self._advance("explained")
        if trainer.is_global_zero:
            self._emit(result, inputs.to("cpu"), probe, self._sink(trainer, pl_module, stage))
        self._advance("written")

    def _get_probe(self, trainer: pl.Trainer, stage: Stage) -> Probe:
        if self._probe is None:
            if self._user_probe is not None:
                self._probe = probe_from_user(self._user_probe, self.num_samples, self.batch_to_inputs)
            else:
                loaders = (trainer.test_dataloaders if stage == "test" else trainer.predict_dataloaders
                           if stage == "predict" else trainer.val_dataloaders)
                if isinstance(loaders, (list, tuple)):
                    loaders = loaders[0] if loaders else None
                if loaders is None:
                    raise ValueError(
                        expected("probe", f"given when the trainer has no {stage} dataloader to draw from", None)
                    )
                self._probe = probe_from_dataloader(loaders, self.num_samples, self.batch_to_inputs, shared=True)
        return self._probe

    def _prepare(self, probe: Probe, model: nn.Module) -> ModelInputs:
        """The probe as model inputs: cloned out of inference mode, on the model's device, floats in its dtype."""
        return on_model(self.batch_to_inputs(move_to(probe.batch, "cpu")), model)

    # ------------------------------------------------------------------ helpers for subclasses
    def _targets(self, logits: Tensor, inputs: ModelInputs) -> Tensor:
        return resolve_targets(logits, self.target, inputs.labels)  # type: ignore[arg-type]

    def _titles(self, result: Explanation, inputs: ModelInputs, probe: Probe) -> list[str]:
        """Tile titles: dataset index, true label, predicted label and confidence (from ``result``)."""
        from lightning_xai.callbacks._emit import probe_titles

        return probe_titles(probe.indices, inputs.labels, result.prediction, result.confidence, self._class_name)

    # ------------------------------------------------------------------ to implement
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> Any:
        """Run the explainer on the probe (inside ``explanation_mode``, every rank); subclasses may add to it."""
        if self._explainer is None:
            raise RuntimeError(f"lightning_xai: {type(self).__name__} explained before its explainer was set.")
        return self._explain_with(self._explainer, model, inputs)

    def _explain_with(self, explainer: Explainer, model: nn.Module, inputs: ModelInputs,
                      target: Any = None) -> Explanation:
        """``explainer`` on the probe ``inputs`` for ``target`` (default this callback's): under DDP each rank
        explains its share of the probe when the explainer allows it, and every rank gets the whole explanation
        (collective: call it on every rank, in the same order)."""
        return explain_split(self._split, explainer, model, inputs, self.target if target is None else target,
                             self.scorer)

    @abstractmethod
    def _emit(self, result: Any, inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        """Render ``result`` and hand it to ``sink`` (rank zero only)."""


def _stage_of(trainer: pl.Trainer) -> Stage:
    """The stage the trainer runs now (for a sibling callback's :meth:`XAICallback.explain`)."""
    if trainer.state.fn == TrainerFn.PREDICTING:
        return "predict"
    return "test" if trainer.testing else ("fit" if trainer.state.fn == TrainerFn.FITTING else "validate")
