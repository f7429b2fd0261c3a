"""CalibrationCallback: ECE, MCE, RMSCE, ACE, Brier, NLL and reliability diagrams every epoch and on checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai._checks import check_choice, check_non_negative_int, check_positive_int
from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks._calibration_checks import check_predictions, step_predictions
from lightning_xai.callbacks._calibration_ranks import RankPart, gather_parts, merge_states
from lightning_xai.callbacks._gallery import Gallery, gallery_explainer
from lightning_xai.callbacks._gallery_ranks import explain_on_ranks
from lightning_xai.callbacks._shell import CallbackShell, Stage
from lightning_xai.functional.calibration import (
    CalibrationState,
    _calibration_summary,
    _calibration_update_step,
    _infer_task,
    _reliability_compute,
    _temperature_ece,
    calibration_compute,
    calibration_state,
)

__all__ = ["CalibrationCallback"]

Task = Literal["auto", "binary", "multiclass", "multilabel"]
_LABELS_HINT = (" The labels are what `batch_to_inputs` returns as ModelInputs(labels=...): fix the batch, or pass "
                "CalibrationCallback(batch_to_inputs=...) returning the right labels.")


class CalibrationCallback(CallbackShell):
    """Calibration of a classifier over the whole validation (or test) set, streamed batch by batch.

    Logs ``xai/calibration/{ece,mce,rmsce,ace,brier,nll,accuracy,confidence}``, the reliability diagram
    ``xai/calibration/reliability`` (ECE in its title), with ``temperature_scaling`` the fitted temperature and the
    ECE after scaling (the model is never changed), with ``per_class`` a bar figure of one-vs-rest ECE, and a
    gallery of the most confident mistakes (images or token ids, explained for the predicted class by an attribution
    callback on the same Trainer through its public ``explain``: the heatmap of a :class:`GradCAMCallback`, the
    SHAP heatmap / token plot of a :class:`SHAPCallback`, or any callback holding a registered explainer).
    The bins go to ``calibration.json`` so checkpoints can be compared later: per-bin ``counts``, ``accuracy`` and
    ``confidence`` (``n_bins`` entries, torchmetrics' bins, ``null`` when empty), ``edges``, ``at_one`` (the
    predictions of confidence exactly 1.0, which torchmetrics bins apart) and the overall values under
    ``metrics`` (``ece``, ``mce``, ..., ``accuracy``, ``confidence``, ``temperature``).

    A declared ``input`` that the predictions contradict is warned about once per ``fit``/``validate``/``test``
    (``"logits"`` while every row is a distribution: a model ending in ``softmax``); ``input="probs"`` on
    values outside [0, 1] or rows not summing to 1 is an error.

    Bin statistics are accumulated on the device (memory O(n_bins x classes)). Under DDP every rank's state,
    gallery mistakes and kept logits are gathered to rank zero and combined, so two processes give the numbers and
    the gallery of one; the gallery's image maps are computed on the ranks that held its mistakes, each mistake
    alone (so its map has the same bits on any rank), and gathered to rank zero. ACE uses equal-mass bins over a
    bounded reservoir sample of ``adaptive_sample`` predictions per rank, merged (exact while the epoch has fewer
    predictions). The temperature is fitted on at most ``max_temperature_samples`` logits per rank, from every rank.

    Args:
        n_bins: equal-width confidence bins.
        task: ``"binary"``, ``"multiclass"``, ``"multilabel"`` or ``"auto"`` (from the shapes of logits and labels).
        input: ``"logits"``, ``"probs"`` or ``"auto"`` (probabilities when they lie in [0, 1] and sum to one).
        per_class: also log one-vs-rest ECE per class (multiclass).
        temperature_scaling: fit a temperature on the epoch's logits and log it with the ECE after scaling.
        gallery_size: how many of the most confident mistakes to show (0: none); their inputs are kept (on the
            CPU) until the epoch ends.
        gallery_method: explain the mistakes with this registered explainer (e.g. ``"integrated_gradients"``)
            instead of an attribution callback's on the Trainer; it must need no background drawn from the data.
        gallery_method_kwargs: its arguments.
        source: where predictions come from: ``"outputs"`` (what ``validation_step`` returns: a logits tensor or a
            dict with ``logits``/``preds``), ``"forward"`` (the callback runs ``forward_fn`` on the batch) or
            ``"auto"`` (outputs when they hold one row of logits per sample, else forward, where ``output=``
            applies).
        adaptive_sample: reservoir size for ACE (0: no ACE, and an update about 8% cheaper).
        max_temperature_samples: logits kept per rank for temperature scaling.
        seed: seed of the reservoir's own generator (rank ``r`` uses ``seed + r``: merged samples stay uniform).
        **shell: ``batch_to_inputs``, ``forward_fn``, ``output`` (a key, index or callable picking the head),
            ``class_names``, ``every_n_epochs``, ``stages``, ``on_error``, ``log_dir``, ``name`` (the namespace, to
            calibrate two heads on one Trainer), ``figures``, ``render_every_n_epochs`` as in
            :class:`~lightning_xai.CallbackShell`.

    Example:
        >>> CalibrationCallback(n_bins=15, per_class=True).n_bins
        15
    """

    name = "calibration"

    # not "predict": calibration compares predictions with labels,
    # which predict batches do not have
    allowed_stages = ("fit", "validate", "test")

    def __init__(
        self,
        n_bins: int = 15,
        task: Task = "auto",
        input: Literal["auto", "logits", "probs"] = "auto",
        per_class: bool = False,
        temperature_scaling: bool = True,
        gallery_size: int = 8,
        gallery_method: str | None = None,
        gallery_method_kwargs: dict[str, Any] | None = None,
        source: Literal["auto", "outputs", "forward"] = "auto",
        adaptive_sample: int = 100_000,
        max_temperature_samples: int = 100_000,
        seed: int = 0,
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
        super().__init__(batch_to_inputs=batch_to_inputs, forward_fn=forward_fn, output=output,
                         class_names=class_names, every_n_epochs=every_n_epochs, stages=stages, on_error=on_error,
                         log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs)
        self.n_bins = check_positive_int("n_bins", n_bins)
        self.task = check_choice("task", task, ("auto", "binary", "multiclass", "multilabel"))
        self.input = check_choice("input", input, ("auto", "logits", "probs"))
        self.source = check_choice("source", source, ("auto", "outputs", "forward"))
        self.per_class = bool(per_class)
        self.temperature_scaling = bool(temperature_scaling)
        self.gallery_size = check_non_negative_int("gallery_size", gallery_size)
        self.adaptive_sample = check_non_negative_int("adaptive_sample", adaptive_sample)
        self.max_temperature_samples = check_non_negative_int("max_temperature_samples", max_temperature_samples)
        self.seed = check_non_negative_int("seed", seed)
        self._state: CalibrationState | None = None
        self._resolved_task: str | None = None
        self._kept_logits: list[Tensor] = []
        self._kept_labels: list[Tensor] = []
        self.gallery_method = gallery_method
        self._gallery_explainer = gallery_explainer(gallery_method, gallery_method_kwargs)
        self._gallery = Gallery(self.gallery_size, self._gallery_explainer)
        self._input_warned = False
        self._id = {"n_bins": n_bins, "task": task, "output": output if not callable(output) else output.__name__,
                    **({"name": name} if name is not None else {})}

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._input_warned = False  # said once per fit / validate / test

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    @override
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        stage = self._stage(trainer)
        if stage is not None:
            self._safely(trainer, stage, self._update, pl_module, outputs, batch)

    @override
    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        stage = self._stage(trainer, testing=True)
        if stage is not None:
            self._safely(trainer, stage, self._update, pl_module, outputs, batch)

    def _step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        self._finish(trainer, pl_module, stage)

    # ------------------------------------------------------------------ accumulation
    def _reset(self) -> None:
        self._state, self._kept_logits, self._kept_labels = None, [], []
        self._gallery = Gallery(self.gallery_size, self._gallery_explainer)

    def _predictions(self, pl_module: pl.LightningModule, outputs: Any, inputs: ModelInputs) -> Tensor:
        found = step_predictions(outputs, inputs.batch_size, self.source)
        if found is not None:
            return found
        with torch.no_grad():
            return self._logits(self._model_output(pl_module, inputs)).detach()

    def _update(self, pl_module: pl.LightningModule, outputs: Any, batch: Any) -> None:
        inputs = self.batch_to_inputs(batch)
        if inputs.labels is None:
            raise ValueError(
                "CalibrationCallback needs labels, but `batch_to_inputs` found none in the batch (it looks for "
                "(x, y) tuples and 'labels'/'label'/'target' keys). Pass `batch_to_inputs=` returning "
                "ModelInputs(labels=...)."
            )
        preds = check_predictions(self._predictions(pl_module, outputs, inputs), self.task)  # errors name output=
        labels = inputs.labels.to(preds.device)
        task = self._resolved_task = self._resolved_task or _infer_task(preds, labels, self.task)
        if self._state is None:
            classes = preds.shape[-1] if task != "binary" else None
            self._state = calibration_state(self.n_bins, num_classes=classes, per_class=self.per_class and
                                            task == "multiclass", adaptive_sample=self.adaptive_sample,
                                            device=preds.device, seed=self.seed + pl_module.global_rank)
        mismatch = _calibration_update_step(self._state, preds, labels, task, self.input,  # type: ignore[arg-type]
                                            target_name="labels", target_hint=_LABELS_HINT)
        if mismatch is not None and not self._input_warned:
            self._input_warned = True
            rank_zero_warn(f"lightning_xai: CalibrationCallback: {mismatch} (Said once per run.)",
                           category=UserWarning)
        kept = sum(t.shape[0] for t in self._kept_logits)
        if self.temperature_scaling and self.input != "probs" and kept < self.max_temperature_samples:
            room = self.max_temperature_samples - kept
            self._kept_logits.append(preds[:room].float().cpu())
            self._kept_labels.append(labels[:room].cpu())
        if task == "multiclass" and self.gallery_size:
            self._gallery.offer(preds, labels, inputs, self.input)

    # ------------------------------------------------------------------ epoch end
    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        maps = None
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():  # every rank, collective
            parts = gather_parts(RankPart.of(self._state, self._gallery.kept, self._kept_logits, self._kept_labels))
            self._state = merge_states(self._state, parts, trainer.global_rank)
            self._gallery.merge([replace(m, rank=r) for r, part in enumerate(parts) for m in part.mistakes])
            self._kept_logits = [p.logits for p in parts if p.logits is not None]
            self._kept_labels = [p.labels for p in parts if p.labels is not None]
            self._resolved_task = self._resolved_task or next(
                (p.state.task for p in parts if p.state is not None), None)
        if self._state is not None:  # the image maps, on the ranks that hold the mistakes (collective under DDP)
            maps = explain_on_ranks(self._gallery, trainer, pl_module, self.scorer)
        if self._state is None or not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in calibration_compute(self._state).items()}
        sink = self._sink(trainer, pl_module, stage)
        for key in ("ece", "mce", "rmsce", "ace", "brier", "nll", "accuracy", "confidence", "nonfinite"):
            if key in metrics:
                sink.scalar(key, float(metrics[key]))
        bad = int(metrics.get("nonfinite", 0))
        if bad:
            rank_zero_warn(f"lightning_xai: {bad} predictions with NaN/inf were left out of calibration at epoch "
                           f"{sink.event.epoch} (logged as xai/calibration/nonfinite).", category=RuntimeWarning)
        extra = self._temperature(sink)
        self._render(metrics, extra, sink)
        self._gallery.render(sink, pl_module, trainer, self._class_name, self.scorer, maps)
        sink.commit(method="calibration", task=self._resolved_task, n_bins=self.n_bins, **extra)

    def _temperature(self, sink: Any) -> dict[str, float]:
        if not self._kept_logits or self._resolved_task is None:
            return {}
        fitted = _temperature_ece(torch.cat(self._kept_logits), torch.cat(self._kept_labels), self._resolved_task,
                                  self.input, self.n_bins)
        if fitted is None:
            return {}
        extra = dict(zip(("temperature", "ece_after_temperature"), fitted))
        for key, value in extra.items():
            sink.scalar(key, value)
        return extra

    def _render(self, metrics: dict[str, Tensor], extra: dict[str, float], sink: Any) -> None:
        from lightning_xai.render.calibration import per_class_bars, reliability_diagram

        bins = _reliability_compute(self._state)  # type: ignore[arg-type]
        ev = sink.event
        sub = (f"{self._resolved_task} · {int(bins['counts'].sum())} predictions · {ev.stage} · epoch {ev.epoch} · "
               f"step {ev.global_step}")
        sink.figure("reliability", partial(reliability_diagram, bins["counts"], bins["confidence"], bins["accuracy"],
                                           float(metrics["ece"]), subtitle=sub))
        summary = _calibration_summary(self._state, metrics)  # type: ignore[arg-type]
        summary["metrics"].update(extra)
        if "per_class_ece" in metrics:
            names = [self._class_name(i) for i in range(metrics["per_class_ece"].numel())]
            sink.figure("per_class_ece", partial(per_class_bars, metrics["per_class_ece"], names,
                                                 title=f"ECE per class · epoch {ev.epoch}"))
        sink.json("calibration", summary)

