"""Drift metrics (lightning_xai.functional.drift): against scipy / scikit-learn, known cases, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lightning_xai.functional.drift import (
    HIGHER_IS_CLOSER,
    IDENTICAL_VALUE,
    METRICS_BY_KIND,
    center_of_mass_shift,
    cosine,
    drift_metrics,
    focus_radius,
    focus_radius_change,
    ndcg,
    spearman,
    top_token_overlap,
    topk_iou,
)

SHAPES = {"map": (5, 12, 10), "tokens": (5, 17), "clip": (3, 4, 9, 8)}


def _with_ties(shape: tuple[int, ...], seed: int, signed: bool = True) -> torch.Tensor:
    """Random maps with many ties (values on a coarse grid), as float16-stored or ReLU'd maps have."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 7, shape, generator=g).float()
    return x - 3 if signed else x


# --- identity and known values ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("signed", [True, False])
def test_identical_maps_give_identity_values(name: str, signed: bool) -> None:
    a = torch.randn(SHAPES[name]) if signed else torch.rand(SHAPES[name])
    a[0] = 0.0  # an all-zero probe too
    a[1] = a[1].half().float().round()  # one with ties
    metrics = drift_metrics(a, a.clone())
    for metric, value in metrics.items():
        assert value.dtype == torch.float32 and value.shape == (a.shape[0],)
        assert torch.equal(value, torch.full_like(value, IDENTICAL_VALUE[metric])), (metric, value)


def test_metric_names_are_stable() -> None:
    assert list(drift_metrics(torch.rand(2, 4, 4), torch.rand(2, 4, 4))) == list(METRICS_BY_KIND["map"])
    assert list(drift_metrics(torch.rand(2, 6), torch.rand(2, 6))) == list(METRICS_BY_KIND["tokens"])
    for shape in ((2, 6), (2, 3, 4, 4)):
        vector = drift_metrics(torch.rand(shape), torch.rand(shape), kind="vector")
        assert list(vector) == list(METRICS_BY_KIND["vector"])
    every = {m for names in METRICS_BY_KIND.values() for m in names}
    assert set(IDENTICAL_VALUE) == every and set(HIGHER_IS_CLOSER) <= every
    assert {m for m in every if IDENTICAL_VALUE[m] == 1.0} == set(HIGHER_IS_CLOSER)


def test_reversed_ranking_gives_minus_one() -> None:
    a = torch.randn(4, 50)
    ranks = a.argsort(dim=1).argsort(dim=1).float()
    assert torch.allclose(spearman(a, -ranks), torch.full((4,), -1.0))
    assert torch.allclose(spearman(a, -a), torch.full((4,), -1.0))
    assert torch.allclose(cosine(a, -a), torch.full((4,), -1.0))


def _blob(size: int, cy: int, cx: int) -> torch.Tensor:
    m = torch.zeros(size, size)
    m[cy - 2 : cy + 3, cx - 1 : cx + 2] = torch.tensor([1.0, 2.0, 3.0])  # asymmetric, compact
    return m


def test_shifted_map_gives_com_shift_equal_to_the_shift() -> None:
    a = torch.stack([_blob(32, 10, 10), _blob(32, 20, 12)])
    b = torch.stack([_blob(32, 13, 14), _blob(32, 20, 12)])  # shifted by (3, 4), and unchanged
    shift = center_of_mass_shift(a, b)
    assert torch.allclose(shift, torch.tensor([5.0, 0.0]), atol=1e-5)
    assert torch.allclose(drift_metrics(a, b)["com_shift"], shift)
    # a clip: per-frame shifts (3, 4) and (0, 0) average to 2.5 pixels
    clip_a = torch.stack([_blob(32, 10, 10), _blob(32, 20, 20)])[None]
    clip_b = torch.stack([_blob(32, 13, 14), _blob(32, 20, 20)])[None]
    assert torch.allclose(center_of_mass_shift(clip_a, clip_b), torch.tensor([2.5]), atol=1e-5)
    # the focus radius does not move with the map
    assert torch.allclose(focus_radius_change(a, b), torch.zeros(2), atol=1e-5)


def test_focus_radius_against_numpy() -> None:
    maps = torch.rand(3, 2, 9, 7)
    maps[0, 1] = 0.0  # a frame without mass has radius 0
    out = focus_radius(maps)
    for i in range(3):
        radii = []
        for frame in maps[i].double().numpy():
            total = frame.sum()
            if total == 0:
                radii.append(0.0)
                continue
            ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]]
            cy, cx = (frame * ys).sum() / total, (frame * xs).sum() / total
            radii.append(math.sqrt((frame * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum() / total))
        assert out[i].item() == pytest.approx(np.mean(radii), rel=1e-5)
    wide = maps.clone()
    wide[:, :, 0, 0] += 5.0  # mass far from the centre: more spread
    assert (focus_radius_change(maps, wide) > 0).all()


def test_degenerate_probes_never_give_nan() -> None:
    ones, zeros, twos = torch.ones(1, 6), torch.zeros(1, 6), torch.full((1, 6), 2.0)
    rand = torch.rand(1, 6) + 0.1
    assert spearman(ones, ones).item() == 1.0 and spearman(ones, twos).item() == 0.0
    assert spearman(ones, rand).item() == 0.0 and spearman(rand, ones).item() == 0.0
    assert cosine(zeros, zeros).item() == 1.0 and cosine(zeros, rand).item() == 0.0
    assert ndcg(zeros, zeros).item() == 1.0 and ndcg(zeros, rand).item() == 0.0
    assert ndcg(rand, zeros).item() > 0.0  # b gives no ranking: ties averaged, the mean gain
    values = drift_metrics(torch.zeros(2, 5, 5), torch.rand(2, 5, 5))
    assert all(torch.isfinite(v).all() for v in values.values())


# --- against reference libraries -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(6, 40), (4, 7, 9), (2, 3, 5, 6)])
def test_spearman_matches_scipy(seed: int, shape: tuple[int, ...]) -> None:
    a, b = _with_ties(shape, seed), _with_ties(shape, seed + 100)
    b[0] = a[0] * 2 + 1  # a perfectly correlated probe
    ours = spearman(a, b)
    ref = [stats.spearmanr(a[i].flatten(), b[i].flatten()).statistic for i in range(shape[0])]
    assert torch.allclose(ours.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-5)
    c, d = torch.randn(shape), torch.randn(shape)  # continuous
    ref = [stats.spearmanr(c[i].flatten(), d[i].flatten()).statistic for i in range(shape[0])]
    assert torch.allclose(spearman(c, d).double(), torch.tensor(ref, dtype=torch.float64), atol=1e-5)


def test_keep_mask_equals_dropping_the_features() -> None:
    a, b = _with_ties((5, 30), 1), _with_ties((5, 30), 2)
    keep = torch.rand(5, 30) > 0.4
    for i in range(5):
        kept_a, kept_b = a[i][keep[i]][None], b[i][keep[i]][None]
        for fn in (spearman, ndcg, cosine):
            assert fn(a, b, keep=keep)[i].item() == pytest.approx(fn(kept_a, kept_b).item(), abs=1e-6), fn
        ref = stats.spearmanr(kept_a[0], kept_b[0]).statistic
        assert spearman(a, b, keep=keep)[i].item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("k", [None, 1, 5, 30])
def test_ndcg_matches_scikit_learn(k: int | None) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    a, b = _with_ties((6, 8, 5), 3), _with_ties((6, 8, 5), 4)
    ours = ndcg(a, b, k=k)
    for i in range(6):
        relevance, scores = a[i].abs().reshape(1, -1).numpy(), b[i].abs().reshape(1, -1).numpy()
        ref = sklearn_metrics.ndcg_score(relevance, scores, k=k)
        assert ours[i].item() == pytest.approx(ref, abs=1e-6)
    assert (ndcg(a, a, k=k) == 1.0).all()


def test_topk_iou_and_top_token_overlap_against_sets() -> None:
    a, b = torch.randn(4, 50), torch.randn(4, 50)  # continuous: no ties
    for k in (0.02, 0.1, 0.5, 1.0):
        count = math.ceil(50 * k)
        ours = topk_iou(a, b, k=k)
        for i in range(4):
            sa = set(a[i].abs().topk(count).indices.tolist())
            sb = set(b[i].abs().topk(count).indices.tolist())
            assert ours[i].item() == pytest.approx(len(sa & sb) / len(sa | sb))
    keep = torch.ones(4, 50, dtype=torch.bool)
    keep[:, :3] = False  # special tokens
    keep[1, 10:] = False  # a short sequence (7 kept tokens)
    keep[2] = False  # nothing kept: 1.0
    ours = top_token_overlap(a, b, k=10, keep=keep)
    for i in (0, 1, 3):
        ids = keep[i].nonzero().flatten()
        count = min(10, len(ids))
        sa = set(ids[a[i, ids].abs().topk(count).indices].tolist())
        sb = set(ids[b[i, ids].abs().topk(count).indices].tolist())
        assert ours[i].item() == pytest.approx(len(sa & sb) / count)
    assert ours[2].item() == 1.0
    assert torch.equal(drift_metrics(a, b, top_tokens=10, keep=keep)["top_token_overlap"], ours)


def test_cosine_matches_torch() -> None:
    a, b = torch.randn(5, 3, 8), torch.randn(5, 3, 8)
    ref = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1))
    assert torch.allclose(cosine(a, b), ref, atol=1e-6)


@pytest.mark.parametrize("signed", [True, False])
def test_drift_metrics_equals_the_single_functions(signed: bool) -> None:
    # with ties, and non-negative maps (one sort shared between the signed and |value| rankings) or not
    a, b = _with_ties((4, 9, 11), 5, signed), _with_ties((4, 9, 11), 6, signed)
    metrics = drift_metrics(a, b, k_fraction=0.2, ndcg_k=7)
    assert torch.equal(metrics["spearman"], spearman(a, b))
    assert torch.equal(metrics["ndcg"], ndcg(a, b, k=7))
    assert torch.equal(metrics["topk_iou"], topk_iou(a, b, k=0.2))
    assert torch.equal(metrics["cosine"], cosine(a, b))
    assert torch.equal(metrics["com_shift"], center_of_mass_shift(a, b))
    assert torch.equal(metrics["focus_radius_change"], focus_radius_change(a, b))


def test_large_batch_is_vectorised() -> None:
    a = torch.rand(64, 96, 96)  # benchmarks/drift.py times 64 x 224 x 224
    b = (a + 0.05 * torch.randn_like(a)).clamp(min=0)
    metrics = drift_metrics(a, b)
    assert all(v.shape == (64,) for v in metrics.values())
    assert (metrics["spearman"] > 0.9).all() and (metrics["ndcg"] > 0.9).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_row_sort_equals_torch_sort(dtype: torch.dtype) -> None:
    from lightning_xai.functional.drift._core import sort_rows

    x = torch.randn(6, 300).to(dtype)
    x[:, :40] = x[:, :40].round()  # ties
    x[0, :20], x[1, 5:15], x[2, ::7] = 0.0, -0.0, torch.inf  # signed zeros tie; +inf (excluded features)
    x[3] = -x[3].abs()  # all negative
    x[4] = torch.sign(x[4]) * torch.finfo(dtype).max  # extremes
    values, order = sort_rows(x)
    ref_values, ref_order = torch.sort(x, dim=1, stable=True)
    assert torch.equal(values, ref_values) and torch.equal(order, ref_order)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    a, b = _with_ties((8, 32, 32), 7), _with_ties((8, 32, 32), 8)
    cpu = drift_metrics(a, b)
    gpu = drift_metrics(a.cuda(), b.cuda())
    for name, value in cpu.items():
        assert gpu[name].device.type == "cuda"
        assert torch.allclose(gpu[name].cpu(), value, atol=1e-5), name


# --- bad input -------------------------------------------------------------------------------------------


def test_non_finite_values_are_refused_naming_the_probe() -> None:
    a, b = torch.rand(3, 4, 4), torch.rand(3, 4, 4)
    b[2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"Expected argument `b` to be finite.*probes \[2\]"):
        drift_metrics(a, b)
    a[1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"`a`.*probes \[1\]"):
        spearman(a, b)


V, M = torch.rand(2, 3), torch.rand(2, 3, 3)  # token / vector maps, image maps


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: spearman(V, torch.rand(2, 4)), ValueError, r"`b` to be a tensor of the same shape as `a`"),
        (lambda: spearman(torch.rand(3), torch.rand(3)), ValueError, r"`a` to be a non-empty tensor of"),
        (lambda: spearman(torch.rand(0, 3), torch.rand(0, 3)), ValueError, r"`a` to be a non-empty"),
        (lambda: spearman([1.0, 2.0], V), TypeError, r"`a` to be a torch.Tensor, but got 'list'"),
        (lambda: spearman(V, V.to(torch.complex64)), TypeError, r"`b` to be a real-valued tensor"),
        (lambda: topk_iou(V, V, k=0), ValueError, r"`k` to be a fraction of the features in \(0, 1\], but"),
        (lambda: topk_iou(V, V, k=1.5), ValueError, r"`k` .* but got 1.5"),
        (lambda: ndcg(V, V, k=0), ValueError, r"`k` to be an integer of at least 1"),
        (lambda: ndcg(V, V, k=0.5), ValueError, r"`k` to be an integer"),
        (lambda: top_token_overlap(V, V, k=0), ValueError, r"`k` to be an integer"),
        (lambda: top_token_overlap(M, M), ValueError, r"token attributions of shape \(B, L\)"),
        (lambda: center_of_mass_shift(V, V), ValueError, r"\(B, \.\.\., H, W\)"),
        (lambda: focus_radius(V), ValueError, r"\(B, \.\.\., H, W\)"),
        (lambda: drift_metrics(V, V, kind="image"), ValueError, r"`kind` to be one of"),
        (lambda: drift_metrics(V, V, kind="map"), ValueError, r"kind='map'"),
        (lambda: drift_metrics(M, M, kind="tokens"), ValueError, r"kind='tokens'"),
        (lambda: drift_metrics(V, V, k_fraction=2), ValueError, r"`k_fraction`"),
        (lambda: drift_metrics(V, V, top_tokens=-1), ValueError, r"`top_tokens`"),
        (lambda: drift_metrics(V, V, ndcg_k=True), ValueError, r"`ndcg_k`"),
        (lambda: cosine(V, V, keep=torch.ones(2, 3)), ValueError, r"`keep` to be None or a bool tensor"),
        (lambda: cosine(V, V, keep=torch.ones(2, 2, dtype=torch.bool)), ValueError, r"`keep`.*\(2, 3\)"),
    ],
)
def test_bad_input_raises_with_the_argument_named(call, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()
