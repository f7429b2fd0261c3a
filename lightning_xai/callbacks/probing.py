"""ProbingCallback: linear probes on hidden layers every epoch, with a control task, accuracy by depth and concepts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai._batch import slice_batch
from lightning_xai._checks import check_non_negative_int, check_positive_int, expected
from lightning_xai._inputs import on_model
from lightning_xai.adapters import ModelInputs
from lightning_xai.callbacks._probing_data import (
    balance_on,
    check_concepts,
    check_layers,
    check_pooling,
    gather_rows,
    probe_targets,
    rank_rows,
    resolve_layers,
    without_concepts,
)
from lightning_xai.callbacks._shell import CallbackShell, Stage
from lightning_xai.functional import explanation_mode
from lightning_xai.functional.probing import (
    ProbingResult,
    capture_activations,
    check_probe_labels,
    fit_probes,
)
from lightning_xai.probe import Probe, probe_from_dataloader

__all__ = ["ProbingCallback"]


class ProbingCallback(CallbackShell):
    """Linear probes on hidden layers: where in the network (and when in training) the label becomes decodable.

    Every scheduled validation (or test) epoch, the activations of ``layers`` on a fixed probe set are pooled and a
    logistic regression (standardised features, ``cv``-fold stratified cross-validation, fixed ``seed``) predicts
    the label, or each integer column named in ``concepts``, from each layer. A control task (Hewitt & Liang 2019:
    the same probe on labels permuted by the callback's own generator) gives the selectivity, accuracy minus
    control. Logs ``xai/probing/<layer>/{accuracy,accuracy_std,control_accuracy,selectivity}`` (a concept's under
    ``xai/probing/<concept>/<layer>/...``), the figure ``accuracy_by_depth`` (layers in depth order, error bars over
    folds, control task, chance level), during ``fit`` the figure ``accuracy_over_epochs``, and ``probing.json``.

    The probe set, up to ``max_samples`` samples balanced over the classes (of the label, or of the first concept),
    is drawn once from the validation (or test) dataset and kept in the callback's state. Activations are captured
    with hooks (removed afterwards; the model's modes, gradients and RNG are left as they were), pooled on the
    model's device as they are produced (memory ``max_samples x width``); under DDP each rank runs its share and
    the fits run on rank zero once the activations are gathered. Fitting stops at the ``time_budget`` of an epoch:
    the remaining layers are skipped with a warning.

    Args:
        layers: dotted module names (``"bert.encoder.layer.0"``, ``"layer4[-1]"``) or ``"auto"``: every block of a
            transformer (ViT, BERT, Swin, ...), else every stage of a convolutional network (ResNet, ConvNeXt).
        pooling: ``"mean"`` over space/time/tokens (token outputs: over the tokens the batch's ``attention_mask``
            keeps, padding left out), ``"max"``, ``"cls"`` (the first token) or ``"flatten"`` (maps
            larger than ``max_features`` are average-pooled down to fit).
        concepts: probe these integer columns of the batch instead of the label: keys of a dict batch
            (``"colour"``) or positions in a tuple batch.
        max_samples: size of the probe set.
        cv: folds of the stratified cross-validation (each class needs at least ``cv`` samples).
        control: also fit the control task and log the selectivity.
        max_iter: iterations of the logistic regression's solver.
        time_budget: seconds of fitting per epoch (``None``: no limit).
        max_features: the width cap of ``pooling="flatten"``.
        batch_size: probe samples per forward pass.
        seed: seed of the folds, the regression and the control permutation.
        **shell: ``batch_to_inputs``, ``forward_fn``, ``every_n_epochs``, ``stages``, ``on_error``, ``log_dir``,
            ``name``, ``figures``, ``render_every_n_epochs`` as in :class:`~lightning_xai.CallbackShell`.

    Example:
        >>> import torch
        >>> from lightning import LightningModule, Trainer
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> class Net(LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.hidden, self.head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)
        ...     def forward(self, x):
        ...         return self.head(self.hidden(x).relu())
        ...     def validation_step(self, batch, batch_idx):
        ...         pass
        >>> y = torch.arange(64) % 2
        >>> x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) + 2 * y[:, None]  # the label, linearly
        >>> data = DataLoader(TensorDataset(x, y), batch_size=16)
        >>> cb = ProbingCallback(layers=("hidden", "head"), cv=4, on_error="raise")
        >>> trainer = Trainer(callbacks=[cb], logger=False, enable_progress_bar=False, enable_model_summary=False,
        ...                   default_root_dir=getfixture("tmp_path"))
        >>> _ = trainer.validate(Net(), data, verbose=False)
        >>> metrics = trainer.callback_metrics  # also in TensorBoard with a TensorBoardLogger, and in probing.json
        >>> float(metrics["xai/probing/hidden/accuracy"]) > 0.6, "xai/probing/head/selectivity" in metrics
        (True, True)
    """

    name = "probing"

    # not "predict": probes are fitted to labels, which predict batches
    # do not have
    allowed_stages = ("fit", "validate", "test")

    def __init__(
        self,
        layers: str | Sequence[str] = "auto",
        pooling: Literal["mean", "cls", "flatten", "max"] = "mean",
        concepts: str | int | Sequence[str | int] | None = None,
        max_samples: int = 2000,
        cv: int = 5,
        control: bool = True,
        max_iter: int = 1000,
        time_budget: float | None = 300.0,
        max_features: int = 4096,
        batch_size: int = 64,
        seed: int = 0,
        batch_to_inputs: Callable[..., ModelInputs] | str | None = None,
        forward_fn: Callable[..., Any] | str | None = None,
        every_n_epochs: int = 1,
        stages: Sequence[Stage] = ("fit", "validate", "test"),
        on_error: Literal["warn", "raise"] = "warn",
        log_dir: str | None = None,
        name: str | None = None,
        figures: Literal["background", "inline"] = "background",
        render_every_n_epochs: int = 1,
    ) -> None:
        super().__init__(batch_to_inputs=batch_to_inputs, forward_fn=forward_fn, every_n_epochs=every_n_epochs,
                         stages=stages, on_error=on_error, log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs)
        self.layers = check_layers(layers)
        self.pooling = check_pooling(pooling)
        self.concepts = check_concepts(concepts)
        self.max_samples = check_positive_int("max_samples", max_samples)
        if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
            raise ValueError(expected("cv", "an integer of at least 2 (folds of the cross-validation)", cv))
        self.cv = cv
        self.control = bool(control)
        self.max_iter = check_positive_int("max_iter", max_iter)
        if time_budget is not None and (isinstance(time_budget, bool) or not isinstance(time_budget, (int, float))
                                        or not time_budget > 0):
            raise ValueError(expected("time_budget", "None or a number of seconds larger than 0", time_budget))
        self.time_budget = None if time_budget is None else float(time_budget)
        self.max_features = check_positive_int("max_features", max_features)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_non_negative_int("seed", seed)
        self.probed_layers: list[str] = []
        self._probe: Probe | None = None
        self._history: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self._id = {"layers": self.layers if isinstance(self.layers, str) else list(self.layers),
                    "pooling": pooling, "concepts": list(self.concepts), **({"name": name} if name else {})}

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "probe": None if self._probe is None else self._probe.state(),
                "history": {t: {layer: [list(p) for p in pts] for layer, pts in s.items()}
                            for t, s in self._history.items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("probe") is not None:
            self._probe = Probe.from_state(state_dict["probe"])
        self._history = {t: {layer: [(int(e), float(a)) for e, a in pts] for layer, pts in s.items()}
                         for t, s in (state_dict.get("history") or {}).items()}

    def _check_model(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.probed_layers = resolve_layers(pl_module, self.layers)

    # ------------------------------------------------------------------ one epoch
    def _step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        self._run(trainer, pl_module, stage)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        probe = self._get_probe(trainer, stage)
        targets = probe_targets(probe.batch, self.concepts, self.batch_to_inputs)
        for target, labels in targets.items():  # before any forward: enough samples per class for the folds
            check_probe_labels(labels, self.cv, name="labels" if target == "label" else target)
        features = self._features(trainer, pl_module, probe)
        if not trainer.is_global_zero:
            return
        deadline = None if self.time_budget is None else time.monotonic() + self.time_budget
        results = [fit_probes(features, labels, target, self.cv, self.seed, self.max_iter, self.control, deadline,
                              self.probed_layers) for target, labels in targets.items()]
        self._warn(results)
        sink = self._sink(trainer, pl_module, stage)
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting:  # the across-epochs figure: during fit only
            for result in results:
                for layer, p in result.probes.items():
                    self._history.setdefault(result.target, {}).setdefault(layer, []).append((sink.event.epoch,
                                                                                             p.accuracy))
        from lightning_xai.callbacks._emit.probing import emit_probing

        settings = {"pooling": self.pooling, "cv": self.cv, "seed": self.seed, "control": self.control,
                    "max_iter": self.max_iter, "n_samples": len(probe), "layers": self.probed_layers,
                    "indices": probe.indices}
        emit_probing(sink, results, self._history if fitting else None, settings)
        sink.commit(method="probing", pooling=self.pooling, cv=self.cv, targets=[r.target for r in results],
                    skipped={r.target: list(r.skipped) for r in results if r.skipped})

    def _get_probe(self, trainer: pl.Trainer, stage: Stage) -> Probe:
        if self._probe is None:
            loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) and loaders else loaders
            if loader is None:
                raise ValueError(f"lightning_xai: ProbingCallback needs a {stage} dataloader to draw its probe set.")
            self._probe = probe_from_dataloader(loader, self.max_samples, balance_on(self.concepts,
                                                self.batch_to_inputs), pool_size=max(2 * self.max_samples, 256),
                                                count_name=None, shared=True)  # "up to": no surprise
        return self._probe

    def _features(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        """Pooled activations of every layer on the whole probe set, in probe order; collective under DDP."""
        rows = rank_rows(len(probe), trainer.global_rank, trainer.world_size)
        parts: dict[str, list[Tensor]] = {name: [] for name in self.probed_layers}
        with explanation_mode(pl_module), torch.no_grad():
            for start in range(0, len(rows), self.batch_size):
                batch = without_concepts(slice_batch(probe.batch, rows[start:start + self.batch_size]), self.concepts)
                inputs = on_model(self.batch_to_inputs(batch), pl_module)
                found = capture_activations(pl_module, self.probed_layers,
                                            lambda inputs=inputs: self.forward_fn(pl_module, inputs),  # type: ignore
                                            self.pooling, self.max_features,  # type: ignore[arg-type]
                                            mask=inputs.kwargs.get("attention_mask"))
                for name, rows_of_layer in found.items():
                    parts[name].append(rows_of_layer)
        gather = trainer.strategy.all_gather
        return {name: gather_rows(torch.cat(chunks), len(probe), trainer.world_size, gather).cpu()  # type: ignore
                for name, chunks in parts.items()}

    def _warn(self, results: list[ProbingResult]) -> None:
        skipped = sorted({layer for r in results for layer in r.skipped})
        if skipped:
            rank_zero_warn(f"lightning_xai: ProbingCallback spent its time_budget={self.time_budget:g}s for this epoch; "
                           f"layers not probed: {skipped}. Raise `time_budget`, lower `max_samples` or probe fewer "
                           "`layers`.", category=RuntimeWarning)
        slow = sorted({layer for r in results for layer, p in r.probes.items() if not p.converged})
        if slow:
            rank_zero_warn(f"lightning_xai: ProbingCallback's logistic regression did not converge within max_iter="
                           f"{self.max_iter} for layers {slow}; raise `max_iter`.", category=RuntimeWarning)
