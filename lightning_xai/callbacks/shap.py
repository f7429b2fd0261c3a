"""SHAPCallback: SHAP values of the probe set every validation epoch and on checkpoints, with completeness checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai._checks import expected
from lightning_xai.adapters import ModelInputs, TargetSpec
from lightning_xai.callbacks._emit.shap import ShapFigureOptions, emit_shap
from lightning_xai.callbacks._shell import Stage
from lightning_xai.callbacks.base import XAICallback
from lightning_xai.explainers import ShapExplainer, ShapExplanation
from lightning_xai.explainers.faithfulness import FaithfulnessCheck
from lightning_xai.explainers.shap import Engine
from lightning_xai.probe import Probe
from lightning_xai.sinks import ArtifactSink

__all__ = ["SHAPCallback"]

_SETTINGS = ("n_background", "nsamples", "completeness_tol", "max_nsamples", "engine", "sampling", "top_k",
             "embedding_layer", "tokenizer", "max_batch", "seed", "video_layout")


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
        video_layout: ``"BTCHW"``, ``"BCTHW"`` or ``"auto"`` for 5-D clip inputs (the figures' channel axis);
            ``"auto"`` warns when a shape leaves it guessing (like ``(B, 8, 16, H, W)``).
        faithfulness: also score the values of 4-D image inputs by deletion and insertion (explained class)
            against a seeded random map: ``xai/shap/faithfulness/<input>/{deletion_auc,insertion_auc}`` and
            their ``..._random`` controls (means); per-sample values in ``summary.json``.
        faithfulness_steps: steps of the deletion and insertion curves.
        faithfulness_baseline: what replaces removed pixels: ``"blur"``, ``"mean"`` or ``"zero"``.
        overlap: during ``fit``, explain a deep copy of the model in a background thread while the next epoch
            trains (see :class:`~lightning_xai.callbacks.XAICallback`): ``"auto"`` (default) where it is safe
            and a core is free, ``True``, ``False``.

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
        video_layout: Literal["auto", "BTCHW", "BCTHW"] = "auto",
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
        figures: Literal["background", "inline"] = "background",
        render_every_n_epochs: int = 1,
        overlap: bool | Literal["auto"] = "auto",
    ) -> None:
        if top_k > 1 and target != "pred":
            raise ValueError(expected("top_k", "1 unless target='pred' (the top classes are ranked predictions)",
                                      f"top_k={top_k} with target={target!r}"))
        explainer = ShapExplainer(n_background=n_background, nsamples=nsamples, completeness_tol=completeness_tol,
                                  max_nsamples=max_nsamples, engine=engine, sampling=sampling, top_k=top_k,
                                  embedding_layer=embedding_layer, tokenizer=tokenizer, max_batch=max_batch, seed=seed,
                                  video_layout=video_layout)
        super().__init__(num_samples=num_samples, probe=probe, batch_to_inputs=batch_to_inputs, forward_fn=forward_fn,
                         target=target, output=output, class_names=class_names, every_n_epochs=every_n_epochs,
                         stages=stages, on_error=on_error, log_dir=log_dir, name=name, figures=figures,
                         render_every_n_epochs=render_every_n_epochs, explainer=explainer,
                         background=background, overlap=overlap)
        self.mean, self.std = mean, std
        self._id.update(n_background=n_background, engine=engine, **({"top_k": top_k} if top_k > 1 else {}))
        self.faithfulness, self.faithfulness_steps, self.faithfulness_baseline = (
            faithfulness, faithfulness_steps, faithfulness_baseline)
        self._faith = FaithfulnessCheck.from_args(faithfulness, faithfulness_steps, faithfulness_baseline, seed,
                                                  explainer.max_batch, warn=rank_zero_warn)
        if self._faith is not None:
            self._id.update(faithfulness=True, faithfulness_steps=faithfulness_steps,
                            faithfulness_baseline=faithfulness_baseline)

    def __getattr__(self, name: str) -> Any:  # n_background, nsamples, engine, ...: the explainer's settings
        if name in _SETTINGS and "_explainer" in self.__dict__:
            return getattr(self.__dict__["_explainer"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def explainer(self) -> ShapExplainer:
        """The :class:`~lightning_xai.explainers.ShapExplainer` this callback runs (read-only)."""
        return self._explainer  # type: ignore[return-value]

    # ------------------------------------------------------------------ explanation
    @override
    def _explain(self, model: nn.Module, inputs: ModelInputs) -> dict[str, Any]:
        expl: ShapExplanation = self._explain_with(self.explainer, model, inputs)  # type: ignore[assignment]
        faith = self._faith and self._split.writer and self._faith.measure_inputs(
            self.scorer, model, inputs, expl.names, expl.result,
            self.target if callable(self.target) else expl.target.to(_device(inputs)))  # type: ignore[union-attr]
        return {"explanation": expl, "faithfulness": faith}

    @override
    def _emit(self, result: dict[str, Any], inputs: ModelInputs, probe: Probe, sink: ArtifactSink) -> None:
        expl: ShapExplanation = result["explanation"]
        who = f" · {self.name}" if self.name != "shap" else (
            f" · {self.output}" if isinstance(self.output, (str, int)) else "")
        emit_shap(expl, self._titles(expl, inputs, probe), probe.indices, sink,
                  ShapFigureOptions(who, self.mean, self.std, self._class_name),
                  measured=result["faithfulness"] or {}, check=self._faith)


def _device(inputs: ModelInputs) -> Any:
    return next(t.device for t in (*inputs.args, *inputs.kwargs.values()) if isinstance(t, Tensor))
