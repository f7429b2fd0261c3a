"""SHAPCallback: SHAP values of the probe set every validation epoch and on checkpoints, with completeness checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import check_choice, check_positive_int, expected
from lightning_xai.adapters import ModelInputs, TargetSpec
from lightning_xai.callbacks._faithfulness import FaithfulnessCheck
from lightning_xai.callbacks._shap_background import background_inputs, check_background, draw_background
from lightning_xai.callbacks._shap_emit import emit_shap, spectrogram_time_first
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.functional.shap import ShapResult, expected_gradients, shap_gradient_reference
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

__all__ = ["SHAPCallback"]

Engine = Literal["gradient", "shap-gradient", "deep", "kernel", "partition"]


class SHAPCallback(XAICallback):
    """SHAP values (expected gradients) of every input of the probe set, with a completeness check per probe.

    Floating inputs (images, spectrograms, clips, tabular features) are explained directly; integer token ids at
    the output of the embedding layer (``get_input_embeddings()`` on Hugging Face models, else the model's
    ``nn.Embedding``, or ``embedding_layer=``). Several inputs are explained jointly and each one's share of the
    total |SHAP| is logged as ``xai/shap/share/<input>``. Results depend on the background: ``background=``, else
    ``n_background`` samples drawn once, class-balanced and deterministic, from the training loader, else the
    validation loader; kept in the callback state so reruns and checkpoint audits use the same one.

    Logged every scheduled epoch: figures per input kind (signed heatmaps, token plots, spectrograms with
    marginals, frame strips) under ``xai/shap/<input>``, ``xai/shap/completeness/{mean,max,relative_median}``,
    ``xai/shap/gini``, ``xai/shap/converged``, a histogram of the values, and the top tokens as text.
    Artifacts: ``shap_values.npz`` (one array per explained input, probe order, plus ``base_values``,
    ``predictions``, ``targets``) and ``summary.json`` (per sample: prediction, target, base value, totals per
    input, tokens with their values); :func:`lightning_xai.load_shap_explanation` loads them back.

    Args:
        num_samples: probe samples to explain.
        n_background: background samples (baselines) drawn from the data, or taken from a ``background`` dataset.
        background: the background to use instead (e.g. 16-32 neutral samples): a tensor (single-input models),
            a batch-shaped tuple/dict like a dataloader batch, a ``Dataset`` or a list of samples; its inputs must
            match the probe's. It wins over a background restored from a checkpoint.
        nsamples: gradient points per probe (see :func:`~lightning_xai.functional.expected_gradients`); for
            ``"kernel"`` the coalitions per probe, for ``"partition"`` shap's ``max_evals``; ``"deep"`` uses every
            background sample as its reference.
        completeness_tol: relative completeness tolerance; points are added in rounds until every probe meets
            it or ``max_nsamples`` is reached (``None``: a single round of ``nsamples``).
        max_nsamples: cap of the adaptive rounds per probe.
        engine: ``"gradient"`` (our expected gradients, adaptive), ``"shap-gradient"`` (``shap.GradientExplainer``,
            the reference), ``"deep"`` (``shap.DeepExplainer``: its additivity error is the logged completeness
            error, and the layers it cannot handle are named in a warning), ``"kernel"`` / ``"partition"``
            (shap's model-agnostic explainers, for one small tabular or token input of at most 512 features;
            missing tokens become the padding id; base value ``f(all masked)`` for tokens and partition).
        sampling: path sampling for ``engine="gradient"``: ``"stratified"`` (default: a shifted lattice folded into
            antithetic pairs; ``"antithetic"`` is an alias), ``"lattice"`` (unfolded; better on rough ReLU nets)
            or ``"random"`` (plain Monte Carlo, like shap).
        top_k: explain the ``k`` highest-scoring classes of each probe (``target="pred"`` only). Rank 1 is the
            usual artifact; all ranks are added as ``<input>_top_k`` ``(num_samples, k, ...)``,
            ``top_k_classes`` and ``base_values_top_k`` ``(num_samples, k)`` and figures ``<input>/top<r>``
            (``load_shap_explanation(folder, top_k=True)`` gives shap's multi-output layout).
        embedding_layer: dotted name of the token embedding layer (default: found automatically).
        tokenizer: a Hugging Face tokenizer (or a local path to load one from) to show token strings.
        max_batch: most rows per forward/backward (bounds memory).
        seed: seed of the callback's own generators (engine, faithfulness control).
        faithfulness: also score the values of 4-D image inputs by deletion and insertion (explained class)
            against a seeded random map: ``xai/shap/faithfulness/<input>/{deletion_auc,insertion_auc}`` and
            their ``..._random`` controls (means); per-sample values in ``summary.json``.
        faithfulness_steps: steps of the deletion and insertion curves.
        faithfulness_baseline: what replaces removed pixels: ``"blur"``, ``"mean"`` or ``"zero"``.

    Example:
        >>> SHAPCallback(num_samples=8, n_background=32, nsamples=50).n_background
        32
    """

    name = "shap"

    def __init__(
        self,
        num_samples: int = 8,
        n_background: int = 32,
        nsamples: int = 64,
        completeness_tol: float | None = 0.01,
        max_nsamples: int = 2048,
        engine: Engine = "gradient",
        sampling: Literal["stratified", "antithetic", "lattice", "random"] = "stratified",
        top_k: int = 1,
        embedding_layer: str | None = None,
        tokenizer: Any = None,
        max_batch: int = 64,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        faithfulness: bool = False,
        faithfulness_steps: int = 20,
        faithfulness_baseline: Literal["blur", "mean", "zero"] = "blur",
        probe: Any = None,
        background: Any = None,
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
        super().__init__(num_samples, probe, batch_to_inputs, forward_fn, target, output, class_names,
                         every_n_epochs, stages, on_error, log_dir, name)
        self.n_background = check_positive_int("n_background", n_background)
        self.nsamples = check_positive_int("nsamples", nsamples)
        self.max_nsamples = check_positive_int("max_nsamples", max_nsamples)
        self.max_batch = check_positive_int("max_batch", max_batch)
        self.seed = seed
        if completeness_tol is not None and (isinstance(completeness_tol, bool) or completeness_tol <= 0):
            raise ValueError(expected("completeness_tol", "None or a number larger than 0", completeness_tol))
        self.completeness_tol = completeness_tol
        self.engine = check_choice("engine", engine, ("gradient", "shap-gradient", "deep", "kernel", "partition"))
        self.sampling = check_choice("sampling", sampling, ("stratified", "antithetic", "lattice", "random"))
        self.top_k = check_positive_int("top_k", top_k)
        if top_k > 1 and target != "pred":
            raise ValueError(expected("top_k", "1 unless target='pred' (the top classes are ranked predictions)",
                                      f"top_k={top_k} with target={target!r}"))
        self.embedding_layer = embedding_layer
        self.tokenizer = tokenizer
        self.mean, self.std = mean, std
        self._user_background = check_background(background)
        self._background: Probe | None = None
        self._id.update(n_background=n_background, engine=engine, **({"top_k": top_k} if top_k > 1 else {}))
        self._faith = FaithfulnessCheck.attach(self, faithfulness, faithfulness_steps, faithfulness_baseline,
                                               seed, self.max_batch)

    # ------------------------------------------------------------------ state: probe and background
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["background"] = None if self._background is None else self._background.state()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if state_dict.get("background") is not None and self._user_background is None:
            self._background = Probe.from_state(state_dict["background"])

    @override
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Stage) -> None:
        if self._background is None:
            self._background = self._draw_background(trainer, stage)
        super()._run(trainer, pl_module, stage)

    def _draw_background(self, trainer: pl.Trainer, stage: Stage) -> Probe:
        return draw_background(self, trainer, stage)

    # ------------------------------------------------------------------ explanation
    @override
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> dict[str, Any]:
        names = [str(i) for i in range(len(inputs.args))] + list(inputs.kwargs)
        flat = (*inputs.args, *inputs.kwargs.values())
        n_args = len(inputs.args)
        background = background_inputs(self, model, inputs)
        base_flat = (*background.args, *background.kwargs.values())
        score_mode = callable(self.target)

        def fwd(m: nn.Module, *tensors: Tensor) -> Tensor:
            mi = ModelInputs(tuple(tensors[:n_args]), dict(zip(names[n_args:], tensors[n_args:])))
            out = self._model_output(m, mi)
            return out if score_mode else self._logits(out)

        with torch.no_grad():
            logits = self._logits(self._model_output(model, inputs)).float()
        target = self.target if score_mode else self._targets(logits, inputs)
        ranked = None
        if self.top_k > 1:
            classes = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).indices
            ranked = [(classes[:, r], self._shap(model, flat, base_flat, classes[:, r], fwd, r))
                      for r in range(classes.shape[1])]
            result = ranked[0][1]
        else:
            result = self._shap(model, flat, base_flat, target, fwd, 0)
        display = ["input" if n_args == 1 and n == "0" else ("input_" + n if n.isdigit() else n) for n in names]
        faith = self._faith and self._faith.measure_inputs(self, model, inputs, display, result, target)
        return {"faithfulness": faith, "result": result, "names": display,
                "inputs": [t.detach().cpu() for t in flat],
                "pred": logits.argmax(-1).cpu() if logits.dim() == 2 else None,
                "confidence": logits.softmax(-1).max(-1).values.cpu() if logits.dim() == 2 else None,
                "target": None if score_mode else target.cpu(),  # type: ignore[union-attr]
                "ranked": None if ranked is None else [(t.cpu(), r) for t, r in ranked],
                "time_first": [n for n, t in zip(display, flat) if t.is_floating_point() and
                               spectrogram_time_first(model, t)]}  # (B, frames, mel) spectrograms (AST)

    def _shap(self, model: nn.Module, flat: tuple[Tensor, ...], base_flat: tuple[Tensor, ...], target: Any,
              fwd: Callable[..., Tensor], rank: int) -> ShapResult:
        """One engine call; each top-k rank gets its own generator, so rank 1 equals a ``top_k=1`` run."""
        gen = torch.Generator(device="cpu").manual_seed(self.seed + rank)
        layer = self.embedding_layer or "auto"
        if self.engine in ("deep", "kernel", "partition"):
            from lightning_xai.functional import shap_deep, shap_kernel, shap_partition

            if self.engine == "deep":
                return shap_deep(model, flat, base_flat, target, forward_fn=fwd, max_batch=self.max_batch,
                                 generator=gen, embedding_layer=layer)
            peer = shap_kernel if self.engine == "kernel" else shap_partition
            return peer(model, flat, base_flat, target, nsamples=self.nsamples, forward_fn=fwd,
                        max_batch=self.max_batch, generator=gen, embedding_layer=layer)
        if self.engine == "shap-gradient":
            return shap_gradient_reference(model, flat, base_flat, target, nsamples=self.nsamples, forward_fn=fwd,
                                           generator=gen, embedding_layer=layer)
        return expected_gradients(model, flat, base_flat, target, forward_fn=fwd, nsamples=self.nsamples,
                                  max_batch=self.max_batch, generator=gen, completeness_tol=self.completeness_tol,
                                  max_nsamples=self.max_nsamples, sampling=self.sampling, embedding_layer=layer)

    @override
    def _emit(self, result: dict[str, Any], inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        emit_shap(self, result, inputs, probe, sink)

    def _token_strings(self, ids: Tensor) -> list[list[str]]:
        """Token strings for ``(B, L)`` ids through ``tokenizer`` (loaded lazily from a path), else ``#id``."""
        if isinstance(self.tokenizer, str):
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        if self.tokenizer is not None:
            return [self.tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
        return [[f"#{int(i)}" for i in row] for row in ids]

    def _special_mask(self, ids: Tensor, attention: Tensor | None) -> Tensor:
        """True for tokens to show: attended, and not special tokens of the tokenizer."""
        keep = torch.ones_like(ids, dtype=torch.bool) if attention is None else attention.bool()
        specials = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        if specials:
            keep &= ~torch.isin(ids, torch.tensor(sorted(specials)))
        return keep

