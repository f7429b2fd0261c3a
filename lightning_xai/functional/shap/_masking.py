"""Features for the model-agnostic shap engines (kernel, partition): what a feature is, what "missing"
means, and the loop both engines share.

One explained input is split into features: a floating input's elements (tabular ``(B, F)``, or any shape,
flattened), or a token input's positions. A missing element takes a background row's value (shap integrates
over the background rows); a missing token takes ``mask_token_id``. Positions holding the embedding's
``padding_idx`` are not features: they keep their id and get 0. Other inputs are passed through row by row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected
from lightning_xai.functional.shap._engine import forward_values
from lightning_xai.functional.shap._inputs import (
    FLOAT,
    TOKEN,
    Prepared,
    Target,
    forward_rows,
    prepare,
    score_rows,
)
from lightning_xai.functional.shap._result import ShapResult, _check_generator, _result
from lightning_xai.functional.shap._tokens import shap_setup

__all__: list[str] = []

MAX_FEATURES = 512  # kernel and partition explain at most this many features per sample


@dataclass
class Features:
    """The one explained input of ``prep``, as features; evaluates the target on rows of feature values."""

    prep: Prepared  # with ``swap=None``: token ids are passed to the model as they are
    token: bool
    shape: tuple[int, ...]  # per-sample shape of the explained input (tokens: (L,))
    ids: Tensor | None  # token ids (B, L)
    mask_token_id: int
    pad_id: int | None
    max_batch: int

    def positions(self, b: int) -> Tensor:
        """Indices (into the flattened sample) of probe ``b``'s features."""
        if not self.token or self.ids is None:
            return torch.arange(int(np.prod(self.shape)))
        if self.pad_id is None:
            return torch.arange(self.shape[0])
        return torch.nonzero(self.ids[b].cpu() != self.pad_id).flatten()

    def values(self, b: int) -> np.ndarray:
        """Probe ``b``'s feature values, ``(M,)`` float64 (token ids as numbers)."""
        if self.token and self.ids is not None:
            return self.ids[b].cpu()[self.positions(b)].double().numpy()
        return self.prep.x[0][b].detach().flatten().double().cpu().numpy()

    def masked(self, b: int) -> np.ndarray:
        """Probe ``b``'s features all missing (tokens only): ``(1, M)``."""
        return np.full((1, len(self.positions(b))), float(self.mask_token_id))

    def _rows(self, b: int, rows: np.ndarray) -> Tensor:
        x = self.prep.x[0]
        if not self.token or self.ids is None:
            return torch.as_tensor(rows, dtype=x.dtype, device=x.device).reshape(-1, *self.shape)
        full = self.ids[b].repeat(rows.shape[0], 1)
        ids = torch.as_tensor(np.rint(rows), dtype=full.dtype, device=full.device)
        full[:, self.positions(b).to(full.device)] = ids
        return full

    def scores(self, b: int, rows: np.ndarray) -> np.ndarray:
        """Target scores of probe ``b`` (its target and passed-through inputs) on ``(n, M)`` feature rows."""
        out = []
        with torch.no_grad():
            for start in range(0, rows.shape[0], self.max_batch):
                points = self._rows(b, rows[start : start + self.max_batch])
                idx = torch.full((points.shape[0],), b, dtype=torch.long)
                scores = score_rows(forward_rows(self.prep, idx, [points]), self.prep.target, idx)
                out.append(scores.double().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0)

    def scatter(self, b: int, phi: np.ndarray) -> Tensor:
        """Per-feature values of probe ``b`` back into the input's shape (0 for non-features)."""
        full = torch.zeros(int(np.prod(self.shape)), dtype=torch.float64)
        full[self.positions(b)] = torch.as_tensor(np.asarray(phi, dtype=np.float64).reshape(-1))
        return full.reshape(self.shape)


def features(prep: Prepared, engine: str, mask_token_id: int | None, max_batch: int) -> Features:
    """Check that ``prep`` explains one input of at most :data:`MAX_FEATURES` features and describe them."""
    explained = [i for i, role in enumerate(prep.roles) if role in (FLOAT, TOKEN)]
    if len(explained) != 1:
        got = f"{len(explained)} explained inputs (indices {explained})"
        raise ValueError(expected("inputs", f"one explained input for engine={engine!r}", got))
    i = explained[0]
    token = prep.roles[i] == TOKEN and prep.swap is not None
    x = prep.inputs[i] if token else prep.x[0]
    shape = tuple(x.shape[1:])
    n = int(np.prod(shape))
    if n > MAX_FEATURES:
        kind = "token positions" if token else "features"
        got = f"{engine!r} on inputs[{i}] shaped {tuple(x.shape)}: {n} {kind} per sample"
        allowed = f"'gradient' for inputs of more than {MAX_FEATURES} features (images, long sequences)"
        raise ValueError(expected("engine", allowed, got))
    pad_id = None
    if token and prep.swap is not None:
        padding_idx = getattr(prep.swap.layer, "padding_idx", None)
        pad_id = int(padding_idx) if isinstance(padding_idx, int) and padding_idx >= 0 else None
    mask_id = mask_token_id if mask_token_id is not None else pad_id if pad_id is not None else 0
    ids = prep.inputs[i] if token else None
    return Features(dataclasses.replace(prep, swap=None), token, shape, ids, mask_id, pad_id, max_batch)


def consecutive_clustering(m: int) -> np.ndarray:
    """A balanced binary tree over ``m`` consecutive features in scipy's linkage format ``(m - 1, 4)``:
    neighbours merge first, then neighbouring pairs, and so on.

    Example:
        >>> consecutive_clustering(3).tolist()
        [[0.0, 1.0, 1.0, 2.0], [3.0, 2.0, 2.0, 3.0]]
    """
    rows: list[list[float]] = []
    nodes = [(i, 1) for i in range(m)]  # (index, size)
    level = 1.0
    while len(nodes) > 1:
        merged = []
        for k in range(0, len(nodes) - 1, 2):
            (a, sa), (c, sc) = nodes[k], nodes[k + 1]
            rows.append([float(a), float(c), level, float(sa + sc)])
            merged.append((m + len(rows) - 1, sa + sc))
        if len(nodes) % 2:
            merged.append(nodes[-1])
        nodes, level = merged, level + 1.0
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


class TokenMasker:
    """A shap masker for one probe's token positions: a missing position takes the mask id; the hierarchy is
    :func:`consecutive_clustering` (what ``shap.PartitionExplainer`` requires: ``shape``, ``clustering``)."""

    def __init__(self, m: int, mask_token_id: int) -> None:
        self.shape = (1, m)
        self.clustering = consecutive_clustering(m)
        self.mask_token_id = mask_token_id

    def __call__(self, mask: np.ndarray, x: np.ndarray) -> tuple[np.ndarray]:
        return (np.where(mask, x, float(self.mask_token_id))[None],)


@dataclass
class Run:
    """The settings both masking engines share."""

    engine: str
    forward_fn: Callable[..., Any] | None
    max_batch: int
    generator: torch.Generator | None
    embedding_layer: nn.Module | str | None
    mask_token_id: int | None

    def check(self, nsamples: int, max_background: int) -> None:
        check_positive_int("nsamples", nsamples)
        check_positive_int("max_batch", self.max_batch)
        check_positive_int("max_background", max_background)
        if self.mask_token_id is not None:
            check_non_negative_int("mask_token_id", self.mask_token_id)


def flat_background(feats: Features) -> np.ndarray:
    """The background of the explained floating input, ``(N, F)`` float64."""
    bg = feats.prep.bg[0]
    return bg.reshape(bg.shape[0], -1).double().cpu().numpy()


def as_rows(feats: Features, data: np.ndarray) -> Tensor:
    """``(K, F)`` feature rows as inputs ``(K, ...)`` of the explained floating input."""
    x = feats.prep.x[0]
    return torch.as_tensor(data, dtype=x.dtype, device=x.device).reshape(-1, *feats.shape)


def _fill_token_baselines(inputs: tuple[Tensor, ...], baselines: Any) -> Any:
    """Token baselines are not used by the masking engines: ``None`` for an integer input is allowed."""
    if baselines is None:
        baselines = (None,) * len(inputs)
    if not isinstance(baselines, (tuple, list)):
        return baselines
    return tuple(
        inputs[i] if b is None and i < len(inputs) and not inputs[i].dtype.is_floating_point else b
        for i, b in enumerate(baselines)
    )


def masking_run(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    baselines: Any,
    target: Target,
    run: Run,
    explain: Callable[[Features, int], tuple[np.ndarray, int]],
    background: Callable[[Features], tuple[Tensor, Tensor]],
) -> ShapResult:
    """Prepare, ``explain(features, b) -> (phi (M,), evaluations)`` probe by probe with numpy's global RNG
    seeded from ``generator`` (the guard restores it), then ``f(x)`` and the base value by forward passes:
    ``f(every token masked)`` for tokens, the ``background(features) -> (rows, weights)`` mean otherwise."""
    gen = _check_generator(run.generator)
    with shap_setup(model, run.embedding_layer) as (swap, explicit):
        baselines = _fill_token_baselines(inputs, baselines)
        prep = prepare(model, inputs, baselines, target, run.forward_fn, swap, explicit)
        feats = features(prep, run.engine, run.mask_token_id, run.max_batch)
        values, points = [], []
        for b in range(prep.batch):
            np.random.seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            phi, used = explain(feats, b) if len(feats.positions(b)) else (np.zeros(0), 0)
            values.append(feats.scatter(b, phi))
            points.append(used)
        if feats.token:
            fx = torch.tensor([float(feats.scores(b, feats.values(b)[None])[0]) for b in range(prep.batch)])
            base = torch.tensor([float(feats.scores(b, feats.masked(b))[0]) for b in range(prep.batch)])
        else:
            rows, weights = background(feats)
            fx, fbg = forward_values(dataclasses.replace(feats.prep, bg=[rows]), run.max_batch)
            base = (fbg * weights.double()[None]).sum(1)
    points_t = torch.tensor(points, dtype=torch.long)
    return _result(prep, [torch.stack(values)], points_t, fx.double(), base.double()[:, None], None)
