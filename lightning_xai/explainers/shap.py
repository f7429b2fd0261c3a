"""The SHAP explainer: expected gradients (our adaptive engine) or shap's own explainers, over every input kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, check_positive_int, expected
from lightning_xai._inputs import Scorer, clip_layout, input_kind, input_names, spectrogram_time_first
from lightning_xai.adapters import ModelInputs
from lightning_xai.explainers._base import Explainer, Explanation, Target, targets_of
from lightning_xai.explainers._tokens import load_tokenizer, shown_tokens, token_strings
from lightning_xai.functional.shap import ShapResult, expected_gradients, shap_gradient_reference

__all__ = ["ENGINES", "ShapExplainer", "ShapExplanation"]

ENGINES = ("gradient", "shap-gradient", "deep", "kernel", "partition")
Engine = Literal["gradient", "shap-gradient", "deep", "kernel", "partition"]


@dataclass(frozen=True, kw_only=True)
class ShapExplanation(Explanation):
    """A SHAP explanation: ``values`` of the input's shape per explained input (token ids: one value per token).

    Attributes:
        result: the engine's :class:`~lightning_xai.functional.shap.ShapResult` (completeness, outputs, ...).
        names: every input's display name, in the order of ``result.values``.
        engine: which engine made it.
        ranked: with ``top_k > 1``, ``(classes, result)`` per rank (rank 1 first).
    """

    result: ShapResult
    names: list[str]
    engine: str
    ranked: list[tuple[Tensor, ShapResult]] | None = None

    row_fields: ClassVar[tuple[str, ...]] = (*Explanation.row_fields, "result")
    entry_fields: ClassVar[tuple[str, ...]] = ("ranked",)


class ShapExplainer(Explainer):
    """SHAP values (expected gradients by default) of every input, against a background batch.

    Floating inputs are explained directly, integer token ids at the output of the embedding layer. Several inputs
    are explained jointly. The background (``background``, a :class:`~lightning_xai.adapters.ModelInputs` batch like
    the inputs) must be set before :meth:`explain`: a callback draws ``n_background`` samples from the data.

    Args:
        n_background: background samples wanted from the data.
        nsamples: gradient points per probe (coalitions for ``"kernel"``, ``max_evals`` for ``"partition"``).
        completeness_tol: relative completeness tolerance of the adaptive rounds (``None``: one round).
        max_nsamples: cap of the adaptive rounds per probe.
        engine: ``"gradient"``, ``"shap-gradient"``, ``"deep"``, ``"kernel"`` or ``"partition"``.
        sampling: path sampling of ``engine="gradient"``: ``"stratified"``, ``"antithetic"``, ``"lattice"``,
            ``"random"``.
        top_k: explain the ``k`` highest-scoring classes of each sample (``target="pred"`` only).
        embedding_layer: dotted name of the token embedding layer (default: found automatically).
        tokenizer: a Hugging Face tokenizer (or a local path) to show token strings.
        max_batch: most rows per forward/backward.
        seed: seed of the engine's own generator (rank ``r`` of ``top_k`` uses ``seed + r``).
        video_layout: ``"BTCHW"``, ``"BCTHW"`` or ``"auto"`` for 5-D clip inputs (which axis the figures sum as
            channels); ``"auto"`` warns when it has to guess.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> shap = ShapExplainer(nsamples=8, completeness_tol=None)
        >>> shap.background = ModelInputs((torch.zeros(4, 3),))
        >>> e = shap.explain(net, ModelInputs((torch.rand(2, 3),)))
        >>> e.values["input"].shape, bool(e.result.relative_error.max() < 1e-4)
        (torch.Size([2, 3]), True)
    """

    name = "shap"

    def __init__(
        self,
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
    ) -> None:
        self.n_background = check_positive_int("n_background", n_background)
        self.nsamples = check_positive_int("nsamples", nsamples)
        self.max_nsamples = check_positive_int("max_nsamples", max_nsamples)
        self.max_batch = check_positive_int("max_batch", max_batch)
        self.seed = seed
        if completeness_tol is not None and (isinstance(completeness_tol, bool) or completeness_tol <= 0):
            raise ValueError(expected("completeness_tol", "None or a number larger than 0", completeness_tol))
        self.completeness_tol = completeness_tol
        self.engine = check_choice("engine", engine, ENGINES)
        self.splittable = self.engine == "gradient"  # per-probe generators (on the CPU: see splits_on)
        self.sampling = check_choice("sampling", sampling, ("stratified", "antithetic", "lattice", "random"))
        self.top_k = check_positive_int("top_k", top_k)
        self.embedding_layer = embedding_layer
        self.tokenizer = tokenizer
        self.video_layout = check_choice("video_layout", video_layout, ("auto", "BTCHW", "BCTHW"))
        self.background: ModelInputs | None = None

    @property
    def overlappable(self) -> bool:  # type: ignore[override]
        """The gradient engine (own generators, the embedding layer found per call) on a copy of the model; not
        shap's own engines (they draw from numpy's global stream) nor an embedding layer given as a module."""
        return self.engine == "gradient" and not isinstance(self.embedding_layer, nn.Module)

    def splits_on(self, device: torch.device) -> bool:
        """The gradient engine draws each probe's numbers from its own generator; on the CPU no round is topped up
        with other probes' rows: there a probe's values do not depend on the rest of the batch."""
        return self.splittable and device.type == "cpu"

    def settings(self) -> dict[str, Any]:
        return {"method": "shap", "engine": self.engine, "nsamples": self.nsamples, "n_background": self.n_background,
                "completeness_tol": self.completeness_tol, "max_nsamples": self.max_nsamples}

    def token_strings(self, ids: Tensor) -> list[list[str]]:
        """Token strings of ``(B, L)`` ids (the tokenizer is loaded from its path on first use), else ``#<id>``."""
        self.tokenizer = load_tokenizer(self.tokenizer)
        return token_strings(self.tokenizer, ids)

    def shown_tokens(self, ids: Tensor, attention: Tensor | None) -> Tensor:
        """True for the tokens to show: attended, and not special tokens of the tokenizer."""
        self.tokenizer = load_tokenizer(self.tokenizer)
        return shown_tokens(self.tokenizer, ids, attention)

    def explain(self, model: nn.Module, inputs: ModelInputs, target: Target = "pred",
                scorer: Scorer | None = None) -> ShapExplanation:
        if self.background is None:
            raise ValueError(expected("background", "a batch of baselines set before explain (ModelInputs like the "
                                      "inputs; a callback draws `n_background` samples)", None))
        if self.top_k > 1 and target != "pred":
            raise ValueError(expected("top_k", "1 unless target='pred' (the top classes are ranked predictions)",
                                      f"top_k={self.top_k} with target={target!r}"))
        scorer = scorer or Scorer(owner="SHAP")
        keys = [str(i) for i in range(len(inputs.args))] + list(inputs.kwargs)
        flat = (*inputs.args, *inputs.kwargs.values())
        n_args = len(inputs.args)
        base_flat = (*self.background.args, *self.background.kwargs.values())
        scoring = callable(target) and not isinstance(target, Tensor)

        def fwd(m: nn.Module, *tensors: Tensor) -> Tensor:
            mi = ModelInputs(tuple(tensors[:n_args]), dict(zip(keys[n_args:], tensors[n_args:])))
            out = scorer(m, mi)
            return out if scoring else scorer.logits(out)

        with torch.no_grad():
            logits = scorer.logits(scorer(model, inputs), scoring=scoring).float()
        classes = targets_of(logits, target, inputs)
        ranked = None
        if self.top_k > 1:
            top = logits.topk(min(self.top_k, logits.shape[-1]), dim=-1).indices
            ranked = [(top[:, r], self._engine(model, flat, base_flat, top[:, r], fwd, r)) for r in range(top.shape[1])]
            result = ranked[0][1]
        else:
            result = self._engine(model, flat, base_flat, classes, fwd, 0)
        names = input_names(inputs)
        cpu = {n: t.detach().cpu() for n, t in zip(names, flat)}
        values = {n: result.values[j].detach().float().cpu() for j, n in enumerate(names) if result.explained[j]}
        kinds = {n: input_kind(n, t) for n, t in cpu.items()}
        attention = cpu.get("attention_mask")
        tokens = {n: self.token_strings(cpu[n]) for n in values if kinds[n] == "tokens"}
        keep = {n: self.shown_tokens(cpu[n], attention) for n in tokens}
        layouts = {n: lay for n in values if (lay := clip_layout(cpu[n], self.video_layout, "SHAP")) is not None}
        return ShapExplanation(
            method="shap", values=values, inputs=cpu, kinds=kinds, signed=True,
            target=None if scoring else classes.cpu(),  # type: ignore[union-attr]
            prediction=logits.argmax(-1).cpu() if logits.dim() == 2 else None,
            confidence=logits.softmax(-1).max(-1).values.cpu() if logits.dim() == 2 else None,
            base_values=result.base_values.float().cpu(), layouts=layouts,
            time_first=tuple(n for n, t in zip(names, flat)
                             if t.is_floating_point() and spectrogram_time_first(model, t)),
            tokens=tokens, keep=keep, settings=self.settings(),
            result=result, names=names, engine=self.engine,
            ranked=None if ranked is None else [(t.cpu(), r) for t, r in ranked],
        )

    def _engine(self, model: nn.Module, flat: tuple[Tensor, ...], base_flat: tuple[Tensor, ...], target: Any,
                fwd: Any, rank: int) -> ShapResult:
        """One engine call; each top-k rank gets its own generator, so rank 1 equals a ``top_k=1`` run."""
        gen = torch.Generator(device="cpu").manual_seed(self.seed + rank)
        layer = self.embedding_layer or "auto"
        if self.engine in ("deep", "kernel", "partition"):
            from lightning_xai.functional.shap._peers import shap_deep, shap_kernel, shap_partition

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

