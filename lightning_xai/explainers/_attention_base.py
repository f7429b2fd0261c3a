"""The base of the attention explainers and their explanation: capture, one row of the matrix a method makes, the
token grid and the maps (the methods are in :mod:`lightning_xai.explainers.attention`)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, expected
from lightning_xai._inputs import Scorer, clip_layout, input_kind, input_names, spectrogram_time_first
from lightning_xai.adapters import ModelInputs, resolve_callable
from lightning_xai.explainers._attention_steps import (
    check_layer,
    divided_reshape,
    end_of_text,
    explained_key,
    head_scores,
    prefix_tokens,
    scored_forward,
)
from lightning_xai.explainers._base import Explainer, Explanation, Target, targets_of
from lightning_xai.explainers._tokens import load_tokenizer, shown_tokens, token_strings
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional.attention import (
    DIVIDED_RULES,
    AttentionCapture,
    DividedAttention,
    capture_attention,
    divided_attention,
    query_scores,
    stack_layers,
    token_grid_scores,
    upsample_scores,
)

__all__ = ["AttentionExplainer", "AttentionExplanation"]


@dataclass(frozen=True, kw_only=True)
class AttentionExplanation(Explanation):
    """An attention explanation of the input ``key``.

    ``values[key]`` is the map on the input: per token ``(B, L)`` for text, upsampled to ``(B, H, W)`` for images,
    ``(B, T, H, W)`` for clips, the input's own ``(B, A, B')`` for spectrograms and ``(B, samples)`` for waveforms.

    Attributes:
        key: the explained input's display name.
        scores: the token scores on the token grid: text ``(B, L)``, images ``(B, grid_h, grid_w)``, video
            ``(B, frames / tubelet, grid_h, grid_w)``, spectrograms the patch grid in the input's axis order (AST
            ``(B, time patches, frequency patches)``; frame tokens ``(B, 1, frames)``), waveforms ``(B, frames)``.
        raw: ``"attention"`` only: the probabilities ``(max_raw, layers, heads, N, N)`` of the first probes; for
            divided space-time attention (TimeSformer) each layer's spatial attention spread over the clip's
            ``N = 1 + frames * patches`` tokens (class token, then frame-major patches; see
            :func:`~lightning_xai.functional.attention.spread_spatial`).
        head_scores: ``"attention"`` only: the row read (class token or mean) of every layer and head of the first
            probes on the token grid, ``(max_raw, layers, heads, *scores.shape[1:])``.
        modules: the attention module of each layer.
        num_prefix_tokens: tokens before the grid (class, distillation, registers), dropped from ``scores``.
        query: which row was read: ``"token 0"`` (the class token), ``"end-of-text token"`` (CLIP's text tower) or
            ``"mean"`` (of the valid tokens' rows).
        weights: ``weighted_by_predictions``: the probability of the explained class each probe was multiplied by.
    """

    key: str
    scores: Tensor
    raw: Tensor | None = None
    head_scores: Tensor | None = None
    modules: tuple[str, ...] = ()
    num_prefix_tokens: int = 0
    query: str = "token 0"
    weights: Tensor | None = None

    row_fields: ClassVar[tuple[str, ...]] = (*Explanation.row_fields, "scores", "weights")

    def drift_arrays(self) -> dict[str, Tensor]:
        """The map keyed by the method (averaged over frames for clips), as Grad-CAM's."""
        return {self.method: self.maps()[self.key]}


class AttentionExplainer(Explainer):
    """Base of the attention explainers: capture, one row of the matrix a subclass makes (:meth:`matrix`, the one
    override), the token grid and the maps.

    Args:
        layer: the last layer rolled out (the layer shown, for ``"attention"``); 0-based, negative from the end;
            ``None``: the last.
        use_cls_token: read the class token's row (CLIP's text tower: the end-of-text token it pools); ``False``:
            the mean row over the valid tokens; ``None``: the class token when the model has one (text models, and
            vision/audio models with prefix tokens), else the mean row.
        weighted_by_predictions: multiply each probe's scores and map by the softmax probability of its explained
            class (its predicted class for ``target="pred"``), so that probes the model is unsure about show fainter
            maps when compared across probes (rollout itself does not depend on the class); rankings within a probe
            do not change. Needs class targets.
        attention_modules: dotted names (``fnmatch`` patterns allowed) of the modules whose output holds the
            probabilities; default: found (Hugging Face attention layers, else ``nn.MultiheadAttention``).
        input_key: the explained input (position or keyword); default the token ids, else the first floating input.
        tokenizer: a Hugging Face tokenizer (or a local path) to show token strings.
        reshape_transform: callable (or dotted path) putting ``(B, N, D)`` tokens on the input's grid
            (``(B, D, *grid)``, prefix tokens dropped); default found by the layer search at the first explanation
            of each input shape. Not used for divided space-time attention (TimeSformer), whose composed matrix is
            over the class token and frame-major patches, placed on ``(frames, grid_h, grid_w)`` by construction.
        reshape_kwargs: keyword arguments of ``reshape_transform``.
        video_layout: ``"BTCHW"``, ``"BCTHW"`` or ``"auto"`` for 5-D inputs.
    """

    name = "attention"
    #: ``grad_rollout``: the explained score's gradients to the probabilities are taken
    needs_gradients: ClassVar[bool] = False

    def __init__(self, layer: int | None = None, use_cls_token: bool | None = None,
                 weighted_by_predictions: bool = False, attention_modules: str | Sequence[str] | None = None,
                 input_key: int | str | None = None, tokenizer: Any = None,
                 reshape_transform: Callable[[Tensor], Tensor] | str | None = None,
                 reshape_kwargs: dict[str, Any] | None = None,
                 video_layout: Literal["auto", "BTCHW", "BCTHW"] = "auto") -> None:
        self.layer = check_layer(layer)
        if use_cls_token is not None and not isinstance(use_cls_token, bool):
            raise TypeError(expected("use_cls_token", "True, False or None", use_cls_token))
        self.use_cls_token = use_cls_token
        if not isinstance(weighted_by_predictions, bool):
            raise TypeError(expected("weighted_by_predictions", "True or False", weighted_by_predictions))
        self.weighted_by_predictions = weighted_by_predictions
        if attention_modules is not None and not (isinstance(attention_modules, str) or (
                isinstance(attention_modules, Sequence) and attention_modules
                and all(isinstance(n, str) for n in attention_modules))):
            raise ValueError(expected("attention_modules", "None or a list of dotted module names",
                                      attention_modules))
        self.attention_modules = (attention_modules if attention_modules is None or isinstance(attention_modules, str)
                                  else list(attention_modules))
        self.input_key = input_key
        self.tokenizer = tokenizer
        self.reshape_transform = resolve_callable("reshape_transform", reshape_transform)
        if reshape_kwargs is not None:
            if self.reshape_transform is None or not isinstance(reshape_kwargs, dict):
                raise ValueError(expected("reshape_kwargs", "a dict, given with `reshape_transform=`", reshape_kwargs))
            self.reshape_transform = partial(self.reshape_transform, **{
                k: tuple(v) if isinstance(v, list) else v for k, v in reshape_kwargs.items()})
        self.video_layout = check_choice("video_layout", video_layout, ("auto", "BTCHW", "BCTHW"))
        #: how many probes' raw probabilities an explanation keeps (``"attention"``)
        self.max_raw = 0
        #: the reshape transform found per (model class, input shape), so the layer search runs once per shape
        self.layouts: dict[tuple[str, tuple[int, ...]], Callable[[Tensor], Tensor]] = {}

    def options(self) -> dict[str, Any]:
        """The method's own arguments (recorded in :meth:`settings`)."""
        return {}

    def splits_on(self, device: torch.device) -> bool:
        """Each probe's attention, rollout and scores are its own; the raw weights of the first ``max_raw`` probes
        are not (a part holds its own first ones): split only without them."""
        return self.max_raw == 0

    def settings(self) -> dict[str, Any]:
        return {"method": self.name, **self.options(), "layer": self.layer, "use_cls_token": self.use_cls_token,
                "weighted_by_predictions": self.weighted_by_predictions, "attention_modules": self.attention_modules}

    @abstractmethod
    def matrix(self, attentions: Tensor | DividedAttention, capture: AttentionCapture) -> Tensor:
        """The ``(B, N, N)`` matrix whose row gives the token scores, from the ``(B, layers, heads, N, N)`` stack, or
        from the temporal and spatial attentions of a divided space-time model (TimeSformer), over its
        ``N = 1 + frames * patches`` tokens in frame-major order (each method's one override)."""

    # ------------------------------------------------------------------------------------------ explain
    def explain(self, model: nn.Module, inputs: ModelInputs, target: Target = "pred",
                scorer: Scorer | None = None) -> AttentionExplanation:
        scorer = scorer or Scorer(owner=f"the {self.name!r} explainer")
        scoring = callable(target) and not isinstance(target, Tensor)
        if scoring and self.weighted_by_predictions:
            raise ValueError(expected("weighted_by_predictions", "False with a callable `target=` (it weights by "
                                      "the probability of a class)", True))
        slots = [*range(len(inputs.args)), *inputs.kwargs]
        names = input_names(inputs)
        key = explained_key(inputs, self.input_key)
        fwd = scored_forward(scorer, inputs, slots, scoring)
        chosen: dict[str, Tensor] = {}

        def score(output: Any) -> Tensor:
            if scoring:
                return target(output)  # type: ignore[operator]
            chosen["classes"] = classes = targets_of(output.detach(), target, inputs)  # type: ignore[assignment]
            return output.gather(1, classes.to(output.device).reshape(-1, 1)).squeeze(1)

        flat = tuple(inputs.get(k) for k in slots)
        capture = capture_attention(model, flat, score, forward_fn=fwd, attention_modules=self.attention_modules,
                                    gradients=self.needs_gradients)
        divided = (divided_attention(capture.attentions, capture.kinds, capture.gradients)
                   if "temporal" in capture.kinds else None)
        attentions = stack_layers(capture.attentions) if divided is None else divided
        count = attentions.shape[-1] if isinstance(attentions, Tensor) else attentions.tokens
        x, name = inputs.get(key), names[slots.index(key)]
        kind = input_kind(name if name != "input" else str(key), x)
        reshape = (self._layout(model, inputs, key, kind, count, fwd) if divided is None
                   else divided_reshape(model, divided))
        prefix, cls_free = prefix_tokens(reshape, count)
        query, label = self._query(model, inputs, x, kind, cls_free)
        mask = inputs.kwargs.get("attention_mask") if kind == "tokens" and query is None else None
        tokens = query_scores(self.matrix(attentions, capture), query, mask)
        grid = tokens if kind == "tokens" else token_grid_scores(tokens, reshape)
        maps = grid if kind == "tokens" else upsample_scores(grid, tuple(x.shape))
        logits = capture.output if not scoring else None
        weights = None
        if self.weighted_by_predictions:
            weights = logits.float().softmax(-1).gather(1, chosen["classes"].reshape(-1, 1)).squeeze(1)
            grid = grid * weights.reshape(-1, *[1] * (grid.dim() - 1)).to(grid.device)
            maps = maps * weights.reshape(-1, *[1] * (maps.dim() - 1)).to(maps.device)
        raw = heads = None
        if self.max_raw:
            raw = attentions[: self.max_raw] if divided is None else divided.spread(self.max_raw)
            heads = head_scores(raw, query, mask, None if kind == "tokens" else reshape)
        settings = self.settings() if divided is None else {**self.settings(),
                                                            "divided_space_time": DIVIDED_RULES[self.name]}
        return self._explanation(model, inputs, names, slots, name, grid, maps, raw, capture, prefix, label,
                                 weights, chosen.get("classes"), logits, heads, settings)


    def _layout(self, model: nn.Module, inputs: ModelInputs, key: int | str, kind: str, count: int,
                fwd: Callable[..., Any]) -> Callable[[Tensor], Tensor] | None:
        """The reshape transform placing the ``count`` tokens on the input (``None``: tokens in a row)."""
        x = inputs.get(key)
        if kind == "tokens":
            if count != x.shape[1]:
                raise ValueError(expected("input_key", f"token ids with one attention position each ({count})",
                                          f"{key!r} of shape {tuple(x.shape)}"))
            return None
        if x.dim() == 2:  # a waveform (or a row of features): the tokens in a row over it
            return None
        if self.reshape_transform is not None:
            return self.reshape_transform
        cache = (type(model).__name__, tuple(x.shape[1:]))
        if cache not in self.layouts:
            from lightning_xai._inputs import first_sample
            from lightning_xai.functional._layers import find_target_layer

            one = first_sample(inputs)
            slots = [*range(len(one.args)), *one.kwargs]
            try:
                with explanation_mode(model):
                    _, reshape = find_target_layer(model, tuple(one.get(k) for k in slots), forward_fn=fwd,
                                                   input_index=slots.index(key))
            except ValueError as err:
                raise ValueError(self._no_grid(model, x, count)) from err
            if reshape is None:
                raise ValueError(self._no_grid(model, x, count))
            self.layouts[cache] = reshape
        return self.layouts[cache]

    def _no_grid(self, model: nn.Module, x: Tensor, count: int) -> str:
        return (expected("reshape_transform", "given (with `reshape_kwargs=`) for this model", None)
                + f" lightning_xai could not put the {count} attention tokens of {type(model).__name__} on the input "
                f"of shape {tuple(x.shape)}; e.g. reshape_transform='lightning_xai.functional.vit_reshape_transform' "
                "with reshape_kwargs={'num_prefix_tokens': 1, 'grid': [14, 14]}.")

    def _query(self, model: nn.Module, inputs: ModelInputs, x: Tensor, kind: str,
               cls_free: bool) -> tuple[int | Tensor | None, str]:
        """The row read: the class token (CLIP text: the end-of-text token), or ``None`` for the mean row."""
        if self.use_cls_token is False:
            return None, "mean"
        if kind == "tokens":
            pooled = end_of_text(model, x)
            return (pooled, "end-of-text token") if pooled is not None else (0, "token 0")
        if cls_free:
            return 0, "token 0"
        if self.use_cls_token:
            raise ValueError(expected("use_cls_token", f"False or None for {type(model).__name__}, whose attention "
                                      "has no class token (every token is on the input's grid)", True))
        return None, "mean"

    def _explanation(self, model: nn.Module, inputs: ModelInputs, names: list[str], slots: list[int | str],
                     name: str, grid: Tensor, maps: Tensor, raw: Tensor | None, capture: AttentionCapture,
                     prefix: int, label: str, weights: Tensor | None, classes: Tensor | None,
                     logits: Tensor | None, heads: Tensor | None, settings: dict[str, Any]) -> AttentionExplanation:
        cpu = {n: inputs.get(k).detach().cpu() for n, k in zip(names, slots) if isinstance(inputs.get(k), Tensor)}
        kinds = {n: input_kind(n, t) for n, t in cpu.items()}
        x = cpu[name]
        layout = clip_layout(x, self.video_layout, f"the {self.name!r} explainer") if x.dim() == 5 else None
        tokens, keep = {}, {}
        if kinds[name] == "tokens":
            self.tokenizer = load_tokenizer(self.tokenizer)
            tokens = {name: token_strings(self.tokenizer, x)}
            keep = {name: shown_tokens(self.tokenizer, x, cpu.get("attention_mask"))}
        two_d = logits is not None and logits.dim() == 2
        return AttentionExplanation(
            method=self.name, values={name: maps.detach().float().cpu()}, inputs=cpu, kinds=kinds, signed=False,
            target=None if classes is None else classes.cpu(),
            prediction=logits.argmax(-1).cpu() if two_d else None,  # type: ignore[union-attr]
            confidence=logits.float().softmax(-1).max(-1).values.cpu() if two_d else None,  # type: ignore[union-attr]
            layouts={name: layout} if layout else {},
            time_first=(name,) if x.is_floating_point() and spectrogram_time_first(model, x) else (),
            tokens=tokens, keep=keep, settings=settings, key=name, scores=grid.detach().float().cpu(),
            raw=None if raw is None else raw.cpu(),
            head_scores=None if heads is None else heads.float().cpu(), modules=capture.modules,
            num_prefix_tokens=prefix, query=label, weights=None if weights is None else weights.cpu())

