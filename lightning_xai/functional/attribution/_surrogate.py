"""LIME and Kernel SHAP over interpretable features (captum's ``Lime`` and ``KernelShap``: their sampling, kernels,
interpretable models and defaults), in torch on the model's device: binary samples drawn from a
``torch.Generator``, perturbed inputs built and scored ``max_batch`` rows per forward, the weighted linear model
fitted in float64 for every probe at once (:mod:`._fit`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected
from lightning_xai.functional._guard import explanation_mode
from lightning_xai.functional._seeds import row_generators
from lightning_xai.functional.attribution._baselines import resolve_baselines
from lightning_xai.functional.attribution._feature_mask import FeatureMask, resolve_feature_masks
from lightning_xai.functional.attribution._features import (
    check_features,
    feature_masks,
    kind_of,
    warn_underdetermined,
)
from lightning_xai.functional.attribution._fit import weighted_lasso, weighted_least_squares
from lightning_xai.functional.attribution._prepare import Prepared, prepare, token_hook
from lightning_xai.functional.shap._tokens import embed_tokens

__all__: list[str] = []

INFINITE_WEIGHT = 1e6  # captum's weight of the empty and the full coalition in Kernel SHAP


def lime_samples(counts: Tensor, n_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
    """Captum's default LIME perturbations: every feature kept with probability 1/2, probe ``b`` drawing from
    ``generators[b]`` over its own ``counts[b]`` features; ``(B, n, max M)`` (columns past a probe's count are 0)."""
    width = int(counts.max())
    out = torch.zeros(counts.shape[0], n_samples, width, dtype=torch.bool)
    for b, (m, gen) in enumerate(zip(counts.tolist(), generators)):
        out[b, :, :m] = torch.rand(n_samples, m, generator=gen) < 0.5
    return out


def shap_samples(counts: Tensor, n_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
    """Captum's Kernel SHAP perturbations: all features, none, then coalitions of ``k`` features, ``k`` drawn with
    probability proportional to ``(M - 1) / (k (M - k))`` and the features uniformly among the ``M choose k``;
    probe ``b`` draws from ``generators[b]``."""
    width = int(counts.max())
    out = torch.zeros(counts.shape[0], n_samples, width, dtype=torch.bool)
    for b, (m, generator) in enumerate(zip(counts.tolist(), generators)):
        k = torch.arange(1, m, dtype=torch.float64)
        draws = n_samples - 2
        size = torch.multinomial((m - 1) / (k * (m - k)), max(draws, 1), True, generator=generator)[:draws] + 1
        ranks = torch.rand(max(draws, 0), m, generator=generator).argsort(1).argsort(1)
        rows = torch.cat([torch.ones(1, m, dtype=torch.bool), torch.zeros(1, m, dtype=torch.bool),
                          ranks < size.view(-1, 1)])
        out[b, :, :m] = rows[:n_samples]
    return out


_INTEGERS = {8: torch.int64, 4: torch.int32, 2: torch.int16}  # the integer of each floating size, for bit selection


def select_bits(x: Tensor, baseline: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(x ^ baseline, baseline)`` as integers of the same size (``None`` for mixed or non-float dtypes): then
    ``(diff & -keep) ^ baseline`` is ``torch.where(keep, x, baseline)`` bit for bit, with no per-element branch
    (torch's CPU ``where`` on a broadcast boolean condition costs several times as much).

    Example:
        >>> x, b = torch.tensor([1.5, -0.0, float("nan")]), torch.tensor([2.0, 0.0, 3.0])
        >>> diff, base = select_bits(x, b)
        >>> keep = torch.tensor([True, True, False])
        >>> (diff & -keep.to(diff.dtype)).bitwise_xor_(base).view(x.dtype).tolist()
        [1.5, -0.0, 3.0]
    """
    if x.dtype != baseline.dtype or not x.is_floating_point() or x.element_size() not in _INTEGERS:
        return None
    x, baseline = torch.broadcast_tensors(x, baseline)
    kind = _INTEGERS[x.element_size()]
    base = baseline.contiguous().view(kind)
    return x.contiguous().view(kind) ^ base, base


class Perturbed:
    """Builds and scores perturbed inputs: a feature's elements keep the input where its sample bit is 1 and take
    the baseline where it is 0 (elements of no feature, such as padding, keep the input)."""

    def __init__(self, prep: Prepared, baselines: tuple[Tensor, ...], masks: tuple[Tensor, ...],
                 target: Tensor | None, max_batch: int) -> None:
        self.prep, self.baselines, self.masks, self.target, self.max_batch = prep, baselines, masks, target, max_batch
        self.ids = tuple((mask + 1).flatten(1) for mask in masks)  # column of each mask element in [1, z]
        self.bits = tuple(select_bits(e, b) for e, b in zip(prep.explained, baselines))

    def inputs(self, probe: Tensor, z: Tensor) -> tuple[Tensor, ...]:
        """The explained tensors of rows ``z`` (``(k, M)`` bits) of probes ``probe`` (``(k,)``, rows of one probe
        consecutive, as :meth:`scores` orders them)."""
        on = torch.cat([torch.ones_like(z[:, :1]), z], 1)  # column 0: "no feature", always the input
        runs = [t.tolist() for t in torch.unique_consecutive(probe, return_counts=True)]
        out = []
        for e, b, mask, ids, bits in zip(self.prep.explained, self.baselines, self.masks, self.ids, self.bits):
            if bits is None:
                keep = on.gather(1, (mask[probe] + 1).flatten(1)).view(-1, *mask.shape[1:])
                out.append(torch.where(keep, e[probe], b[probe]))
                continue
            diff, base = bits
            parts, start = [], 0
            for p, k in zip(*runs):  # one probe's rows: its bits broadcast over them, no per-row copies
                keep = on[start:start + k].T[ids[p]].T.reshape(k, *mask.shape[1:])
                parts.append((diff[p] & keep.to(diff.dtype).neg_()).bitwise_xor_(base[p]))
                start += k
            # contiguous like torch.where's result (a model's kernels may round otherwise on other strides)
            out.append((parts[0].contiguous() if len(parts) == 1 else torch.cat(parts)).view(e.dtype))
        return tuple(out)

    def scores(self, z: Tensor) -> Tensor:
        """Target scores ``(B, n)`` of every row of ``z`` ``(B, n, M)``, ``max_batch`` rows per forward."""
        batch, n = z.shape[:2]
        device = self.prep.explained[0].device
        flat, probes = z.reshape(batch * n, -1).to(device), torch.arange(batch, device=device).repeat_interleave(n)
        out = []
        with torch.no_grad():
            for start in range(0, flat.shape[0], self.max_batch):
                p, rows = probes[start:start + self.max_batch], flat[start:start + self.max_batch]
                scored = self.prep.module(*self.inputs(p, rows), *(r[p] for r in self.prep.rows)).float()
                out.append(scored.reshape(-1) if self.target is None else scored.gather(1, self.target[p, None])[:, 0])
        return torch.cat(out).view(batch, n)

    def cosine(self, z: Tensor) -> Tensor:
        """Cosine similarity ``(B, n)`` between each probe's explained tensors (flattened, concatenated) and its
        perturbed rows, from per-feature dot products (captum's ``Lime`` kernel distance)."""
        batch, _, width = z.shape
        xx = torch.zeros(batch, width + 1, dtype=torch.float64)
        xb, bb = xx.clone(), xx.clone()
        for e, b, mask in zip(self.prep.explained, self.baselines, self.masks):
            e, b = e.double().cpu(), b.double().cpu()
            ids = (mask.cpu() + 1).expand_as(e).flatten(1)
            for acc, v in ((xx, e * e), (xb, e * b), (bb, b * b)):
                acc.scatter_add_(1, ids, v.flatten(1))
        on = z.double()
        dot = xx[:, :1] + (on * xx[:, None, 1:]).sum(-1) + ((1 - on) * xb[:, None, 1:]).sum(-1)
        norm_p = (xx[:, :1] + (on * xx[:, None, 1:]).sum(-1) + ((1 - on) * bb[:, None, 1:]).sum(-1)).clamp_min(0).sqrt()
        norm_x = xx.sum(1, keepdim=True).sqrt()
        return dot / (norm_x.clamp_min(1e-8) * norm_p.clamp_min(1e-8))


def surrogate(
    method: str,
    model: nn.Module,
    inputs: Tensor | tuple[Any, ...],
    target: Tensor | Callable[[Any], Tensor],
    *,
    forward_fn: Callable[..., Any] | None,
    baseline: Any,
    background: tuple[Any, ...] | None,
    kinds: tuple[str, ...] | None,
    layouts: tuple[str | None, ...] | None,
    embedding_layer: nn.Module | str | None,
    n_samples: int,
    n_segments: int,
    compactness: float | None,
    patch: tuple[int, int] | None,
    mask_token_id: int | None,
    alpha: float,
    kernel_width: float,
    generator: torch.Generator | None,
    max_batch: int,
    blur_sigma: float | None,
    names: tuple[str, ...] | None,
    feature_mask: FeatureMask = None,
) -> tuple[tuple[Tensor | None, ...], Tensor, Tensor, Tensor]:
    """LIME (``method="lime"``) or Kernel SHAP: values per input (``None`` where not explained), ``f(x)``,
    ``f(every feature off)`` and the coefficients per probe ``(B, M)``."""
    check_positive_int("n_samples", n_samples)
    check_positive_int("n_segments", n_segments)
    check_positive_int("max_batch", max_batch)
    if mask_token_id is not None:
        check_non_negative_int("mask_token_id", mask_token_id)
    for name, value in (("alpha", alpha), ("kernel_width", kernel_width)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                name == "kernel_width" and value == 0):
            raise ValueError(expected(name, "a number larger than 0" if name == "kernel_width" else
                                      "a number of at least 0", value))
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    scoring = callable(target) and not isinstance(target, Tensor)
    explicit = embedding_layer is not None and not (isinstance(embedding_layer, str) and embedding_layer == "auto")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    with explanation_mode(model), token_hook(model, embedding_layer) as swap:
        prep = prepare(model, inputs, forward_fn, target, swap, explicit)
        device = prep.explained[0].device
        tgt = None if scoring else target.to(device).reshape(-1).clone()  # type: ignore[union-attr]
        kinds = kinds or tuple(kind_of(x, i == prep.token) for i, x in enumerate(inputs))
        layouts = layouts or (None,) * len(inputs)
        baselines = list(resolve_baselines(baseline, prep, kinds, background, blur_sigma))
        ids, pad_id = None, None
        if prep.token is not None and prep.swap is not None:
            ids = inputs[prep.token]
            padding_idx = getattr(prep.swap.layer, "padding_idx", None)
            pad_id = int(padding_idx) if isinstance(padding_idx, int) and padding_idx >= 0 else None
            missing = mask_token_id if mask_token_id is not None else pad_id if pad_id is not None else 0
            j = prep.slots.index(prep.token)
            e = prep.explained[j]
            baselines[j] = embed_tokens(prep.swap.layer, torch.full_like(ids, missing), ids.shape[1]).to(e)
        given = resolve_feature_masks(feature_mask, prep, inputs)
        masks, counts, per_input = feature_masks(prep, kinds, layouts, n_segments, compactness, patch, pad_id, ids,
                                                 given)
        check_features(method, per_input, kinds, prep.slots, names, n_segments, feature_mask is not None)
        warn_underdetermined(method, counts, n_samples)
        gens = row_generators(gen, prep.explained)  # a probe's samples do not depend on the rest of the batch
        z = (lime_samples if method == "lime" else shap_samples)(counts, n_samples, gens)
        run = Perturbed(prep, tuple(baselines), masks, tgt, max_batch)
        y = run.scores(z).double().cpu()
        ends = torch.stack([torch.ones_like(z[:, 0]), torch.zeros_like(z[:, 0])], 1)
        ends &= torch.arange(z.shape[2]) < counts.view(-1, 1, 1)
        fx, off = run.scores(ends).double().cpu().unbind(1)
    if method == "lime":
        distance = 1 - run.cosine(z)
        weights = torch.exp(-distance ** 2 / (2 * kernel_width ** 2))
        coef = weighted_lasso(z.double(), y, weights, float(alpha))
    else:
        size = z.sum(-1, keepdim=True)
        weights = torch.where((size == 0) | (size == counts.view(-1, 1, 1)), INFINITE_WEIGHT, 1.0)[..., 0].double()
        coef = weighted_least_squares(z.double(), y, weights)
    values: list[Tensor | None] = [None] * len(inputs)
    padded = torch.cat([torch.zeros(coef.shape[0], 1, dtype=coef.dtype), coef], 1).float().to(device)
    for slot, e, mask in zip(prep.slots, prep.explained, masks):
        full = padded.gather(1, (mask + 1).expand(e.shape[0], *mask.shape[1:]).flatten(1)).view(-1, *mask.shape[1:])
        values[slot] = full[..., 0] if slot == prep.token else full.expand_as(e).clone()
    return tuple(values), fx.float(), off.float(), coef
