"""AttributionDriftCallback: how the explanations of a fixed probe move across epochs and across retrains."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from torch import Tensor
from typing_extensions import override

from lightning_xai._checks import check_choice, check_choices, check_positive_int, check_probability, expected
from lightning_xai.adapters import ModelInputs, TargetSpec
from lightning_xai.callbacks._drift_method import (
    DRIFT_METHODS,
    RENDER_KEYS,
    auto_method,
    build_explainer,
    check_method,
)
from lightning_xai.callbacks._drift_run import DriftRun
from lightning_xai.callbacks._emit.drift import DriftOptions, emit_drift
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.explainers import Explanation
from lightning_xai.functional._layers import resolve_layer
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

__all__ = ["DRIFT_METHODS", "AttributionDriftCallback"]

class AttributionDriftCallback(XAICallback):
    """Explain the same probe every validation epoch, keep the maps in an :class:`AttributionStore`, log the drift.

    Each scheduled validation (during ``fit``, and every checkpoint-only ``validate``) explains the probe with
    ``method`` (the code of :class:`GradCAMCallback` or :class:`SHAPCallback`, configured by ``method_kwargs``),
    saves the maps as one snapshot of ``run`` in the store, and compares them with three others: the run's
    ``previous`` snapshot, the run's ``first`` one, and the ``reference`` run (a previous retrain) at the same
    epoch, else its last. Logged: ``xai/drift/<metric>/<against>`` (mean over probes) for Spearman rank
    correlation, nDCG of the importance ranking, top-k% IoU and cosine (1 = identical), centre-of-mass shift and
    focus-radius change for maps (pixels, 0 = identical) and top-token overlap for text; a timeline figure
    ``xai/drift/timeline``, a probe × snapshot grid ``xai/drift/snapshots``, and, when Spearman falls below
    ``alert_below``, a warning and a text entry ``xai/drift/alert`` naming the epoch and the probes that moved
    most. ``lightning-xai drift --store <file>`` reads the store later.

    Comparisons are made on the values as stored (``dtype``), so a run compared with itself reads exactly
    1.0 / 0. Snapshots of different probes are never compared or drawn together (the probe's fingerprint is
    stored with each; a run holding some says so once). The store is opened and checked in ``setup``: a
    directory, a text file or another application's database is refused before training starts. Under
    ``fast_dev_run`` the snapshots go to a throwaway store (removed at teardown) as the run ``"fast_dev_run"``,
    and the store is not touched. Under DDP every rank explains the probe and rank zero writes.

    Args:
        method: ``"auto"`` (default: ``"gradcam"`` when the model takes an image or a clip, ``"shap"`` for
            token ids, spectrograms and tabular inputs; decided on the probe at the first explanation, kept in
            the state and in every snapshot), or any registered explainer
            (:func:`lightning_xai.explainers.list_explainers`: every Grad-CAM family method, ``"shap"``, and any
            a third party registered). A ``target_layer`` with ``"auto"`` means Grad-CAM.
        store: the SQLite file (default ``<default_root_dir>/xai_store.sqlite``); shared by many runs.
        run: this run's name in the store (default ``<logger name>/version_<n>``, or the root folder's name
            without a logger); the name written to, :attr:`run_name`, is kept in the callback state, so a resumed
            fit (``ckpt_path=``) and a ``validate`` of its checkpoints append to the same run.
        if_exists: what a new fit (or validate) does when its run is already in the store, written by another
            training: ``"new"`` writes to a new run ``<run>#2`` (``#3``, ...) and says so in a warning,
            ``"append"`` continues that run, ``"raise"`` stops with a ``ValueError`` before training.
        reference_run: a run already in the store to compare with (e.g. the previous retrain).
        alert_below: warn when the mean Spearman correlation against one of ``alert_against`` is below this.
        alert_against: the comparisons that can alert; by default not ``"first"``, since moving away from the
            first (often untrained) epoch is what training does.
        k_fraction: the top fraction of features of ``topk_iou``.
        top_tokens: ``k`` of the top-token overlap (text).
        dtype: how maps are stored: ``"float16"`` (half the size) or ``"float32"``.
        grid_snapshots: the most recent snapshots shown in the grid figure.
        target_layer: Grad-CAM's layer (dotted name; ``None`` finds it).
        method_kwargs: arguments of the method's explainer, e.g. ``{"n_background": 16}`` for SHAP or
            ``{"input_key": "pixel_values"}`` for Grad-CAM; ``mean``/``std`` (normalisation undone in the snapshot
            grid) and ``background`` (SHAP's baselines, as in :class:`SHAPCallback`) are taken by the callback.
        **base: ``num_samples``, ``probe``, ``batch_to_inputs``, ``forward_fn``, ``target``, ``output``,
            ``class_names``, ``every_n_epochs``, ``stages``, ``on_error``, ``log_dir``, ``name``,
            ``figures``, ``render_every_n_epochs`` as in
            :class:`~lightning_xai.XAICallback`. With ``target="pred"`` a change of prediction moves the map
            too; ``target="label"`` follows one class.

    Example:
        >>> cb = AttributionDriftCallback(method="gradcam", store="xai_store.sqlite", run="resnet-v2",
        ...                               reference_run="resnet-v1", alert_below=0.8, if_exists="new")
        >>> cb.method, cb.run, cb.if_exists
        ('gradcam', 'resnet-v2', 'new')
        >>> cb.run_name is None  # named when it starts: 'resnet-v2', or 'resnet-v2#2' if another fit wrote it
        True
    """

    name = "drift"

    def __init__(
        self,
        method: str = "auto",
        store: str | None = None,
        run: str | None = None,
        if_exists: Literal["new", "append", "raise"] = "new",
        reference_run: str | None = None,
        alert_below: float | None = None,
        alert_against: Sequence[Literal["previous", "first", "reference"]] = ("previous", "reference"),
        k_fraction: float = 0.1,
        top_tokens: int = 5,
        dtype: Literal["float16", "float32"] = "float16",
        grid_snapshots: int = 6,
        target_layer: str | None = None,
        method_kwargs: dict[str, Any] | None = None,
        num_samples: int = 8,
        probe: Any = None,
        batch_to_inputs: Callable[..., ModelInputs] | str | None = None,
        forward_fn: Callable[..., Any] | str | None = None,
        target: TargetSpec = "pred",
        output: str | int | Callable[[Any], Tensor] | None = None,
        class_names: Sequence[str] | None = None,
        every_n_epochs: int = 1,
        stages: Sequence[Stage] = ("fit", "validate"),
        on_error: Literal["warn", "raise"] = "warn",
        log_dir: str | None = None,
        name: str | None = None,
        figures: Literal["background", "inline"] = "background",
        render_every_n_epochs: int = 1,
    ) -> None:
        extra = dict(method_kwargs or {})
        render = {k: extra.pop(k) for k in RENDER_KEYS if k in extra}
        super().__init__(num_samples=num_samples, probe=probe, batch_to_inputs=batch_to_inputs, forward_fn=forward_fn,
                         target=target, output=output, class_names=class_names, every_n_epochs=every_n_epochs,
                         stages=stages, on_error=on_error, log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs,
                         background=extra.pop("background", None))
        self.method = check_method(method)
        for arg, value in (("run", run), ("reference_run", reference_run), ("store", store)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(expected(arg, "None or a non-empty string (not only white space)", value))
        self.store_path, self.run, self.reference_run = store, run, reference_run
        self.if_exists = check_choice("if_exists", if_exists, ("new", "append", "raise"))
        if alert_below is not None and (isinstance(alert_below, bool) or not isinstance(alert_below, (int, float))
                                        or not -1.0 <= alert_below <= 1.0):
            raise ValueError(expected("alert_below", "None or a Spearman correlation in [-1, 1]", alert_below))
        self.alert_below = alert_below
        self.alert_against = check_choices("alert_against", alert_against, ("previous", "first", "reference"))
        self.k_fraction = check_probability("k_fraction", k_fraction)
        if self.k_fraction == 0:
            raise ValueError(expected("k_fraction", "a fraction in (0, 1]", k_fraction))
        self.top_tokens = check_positive_int("top_tokens", top_tokens)
        self.dtype = check_choice("dtype", dtype, ("float16", "float32"))
        self.grid_snapshots = check_positive_int("grid_snapshots", grid_snapshots)
        self.mean, self.std = render.get("mean"), render.get("std")
        self._spec = (extra, target_layer)
        if self.method == "auto" and target_layer is not None:
            self.method = "gradcam"
        if self.method != "auto":
            self._explainer = build_explainer(self.method, *self._spec)
        self._target = DriftRun(run, self.if_exists)
        self._id.update(method=method, run=run, store=store)

    @property
    def run_name(self) -> str | None:
        """The run written to: ``run`` (or the default name), ``<run>#2`` if another training wrote ``run``, the
        checkpoint's run after a resume; ``None`` until the callback starts (``fit``/``validate``/``test``)."""
        return self._target.name

    # ------------------------------------------------------------------ state: run name, probe, SHAP background
    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self._target.state(), "method": self.method}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        nested = state_dict.get("explainer") or {}  # checkpoints before 0.2 kept SHAP's background one level down
        if state_dict.get("background") is None and nested.get("background") is not None:
            state_dict = {**state_dict, "background": nested["background"]}
        super().load_state_dict(state_dict)
        self._target.restore(state_dict)
        if self.method == "auto" and state_dict.get("method") not in (None, "auto"):
            self._use(check_method(state_dict["method"]))  # a resume follows the method its run was written with

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._target.adopt(checkpoint)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        layer = getattr(self._explainer, "target_layer", None)
        if isinstance(layer, str):  # a wrong layer name is an error before training, naming the candidates
            resolve_layer(pl_module, layer)
        if self.store_path is None:
            self.store_path = os.path.join(trainer.default_root_dir, "xai_store.sqlite")
        if self._works_in(trainer):
            self._target.open(trainer, self.store_path)

    # the run is named after Lightning restored the callback state (after `setup`), before the first explanation
    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.strategy.restore_checkpoint_after_setup:
            self._name_run(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._name_run(trainer)

    @override
    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._name_run(trainer)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._target.close()

    def _works_in(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn is not None and trainer.state.fn.value in self.stages

    def _name_run(self, trainer: pl.Trainer) -> None:
        if self._works_in(trainer):
            self._target.decide(trainer, {"reference_run": self.reference_run})

    # ------------------------------------------------------------------ explanation
    @override
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        if self._explainer is None:  # method="auto": decided on the probe (every rank has the same one)
            self._use(auto_method(self.batch_to_inputs(self._get_probe(trainer, stage).batch)))
        super()._run(trainer, pl_module, stage)

    def _use(self, method: str) -> None:
        self.method, self._explainer = method, build_explainer(method, *self._spec)

    @override
    def _emit(self, result: Explanation, inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        if self._target.store is None or self._target.name is None:
            raise RuntimeError("lightning_xai: AttributionDriftCallback explains outside fit/validate/test: no store "
                               "was opened in `setup` (or no run named).")
        options = DriftOptions(
            store=self._target.store, run_name=self._target.name, method=self.method,
            reference_run=self.reference_run, other_probe_noted=self._target.other_probe_noted, dtype=self.dtype,
            k_fraction=self.k_fraction, top_tokens=self.top_tokens, alert_below=self.alert_below,
            alert_against=self.alert_against, grid_snapshots=self.grid_snapshots, on_error=self.on_error,
            mean=self.mean, std=self.std)
        emit_drift(options, result, probe, sink)
