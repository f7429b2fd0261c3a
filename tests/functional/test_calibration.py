"""Calibration metrics: ring (a) against torchmetrics, streaming invariants, and RNG hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from lightning_xai.functional.calibration import _common as _calibration_common
from lightning_xai.functional.calibration import (
    brier_score,
    calibration_compute,
    calibration_merge,
    calibration_state,
    calibration_update,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    state_from_tensors,
    state_tensors,
)
from lightning_xai.functional.calibration._compute import _sample

TASKS = ("binary", "multiclass", "multilabel")
N_BINS = (1, 2, 5, 10, 15, 100)
NORMS = ("l1", "max", "l2")
KEY = {"l1": "ece", "max": "mce", "l2": "rmsce"}
EXACT = ("ece", "mce", "rmsce", "brier", "nll", "accuracy", "confidence", "count", "nonfinite")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second intra-op thread only adds waiting on a busy 2-core machine. Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["branching", "sync-free"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the CPU fast path and on the device-sync-free path used off the CPU."""
    if request.param == "sync-free":
        monkeypatch.setattr(_calibration_common, "_branch_on_values", lambda x: False)
    return request.param


def make_data(task: str, n: int = 600, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (scaled so plenty lie outside [0, 1]) and targets drawn from a tempered version of them."""
    g = torch.Generator().manual_seed(seed)
    if task == "binary":
        logits = torch.randn(n, generator=g) * 3
        target = (torch.rand(n, generator=g) < torch.sigmoid(logits / 2)).long()
    elif task == "multiclass":
        logits = torch.randn(n, classes, generator=g) * 3
        target = torch.multinomial(torch.softmax(logits / 2, dim=1), 1, generator=g).squeeze(1)
    else:
        logits = torch.randn(n, classes, generator=g) * 3
        target = (torch.rand(n, classes, generator=g) < torch.sigmoid(logits / 2)).long()
    return logits, target


def to_probs(task: str, logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=1) if task == "multiclass" else torch.sigmoid(logits)


def reference(task: str, preds: torch.Tensor, target: torch.Tensor, n_bins: int, norm: str) -> float:
    if task == "multiclass":
        return float(multiclass_calibration_error(preds, target, preds.shape[1], n_bins=n_bins, norm=norm))
    return float(binary_calibration_error(preds.flatten(), target.flatten(), n_bins=n_bins, norm=norm))


def stream(
    task: str, preds: torch.Tensor, target: torch.Tensor, sizes: list[int], input_: str = "auto", **kwargs
):
    state = calibration_state(**{"n_bins": 15, **kwargs})
    start = 0
    for size in sizes:
        calibration_update(
            state, preds[start : start + size], target[start : start + size], task, input=input_
        )
        start += size
    assert start == preds.shape[0]
    return state


def assert_same(a: dict, b: dict, keys=EXACT, atol: float = 1e-7) -> None:
    for key in keys:
        torch.testing.assert_close(
            a[key].double(),
            b[key].double(),
            atol=atol,
            rtol=0,
            equal_nan=True,
            msg=lambda m, key=key: f"{key}: {m}",
        )


# ------------------------------------------------------------------------------------ ring (a): torchmetrics


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("n_bins", N_BINS)
@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_matches_torchmetrics(task: str, n_bins: int, kind: str, path: str) -> None:
    logits, target = make_data(task, seed=n_bins)
    preds = logits if kind == "logits" else to_probs(task, logits)
    state = calibration_update(calibration_state(n_bins, adaptive_sample=0), preds, target, task, input=kind)
    streamed = calibration_compute(state)
    for norm in NORMS:
        ref = reference(task, preds, target, n_bins, norm)
        for input_ in (kind, "auto"):
            ours = float(
                expected_calibration_error(preds, target, n_bins, task=task, norm=norm, input=input_)
            )
            assert ours == pytest.approx(ref, abs=1e-6), (norm, input_)
        assert float(streamed[KEY[norm]]) == pytest.approx(ref, abs=1e-6), norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("task", TASKS)
def test_matches_torchmetrics_dtypes(task: str, dtype: torch.dtype) -> None:
    logits, target = make_data(task, n=300, seed=7)
    for preds in (logits.to(dtype), to_probs(task, logits).to(dtype)):
        for n_bins in (3, 15):
            for norm in NORMS:
                ours = float(expected_calibration_error(preds, target, n_bins, task=task, norm=norm))
                assert ours == pytest.approx(reference(task, preds, target, n_bins, norm), abs=1e-6)


def _edge_cases() -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(200, 4, generator=g) * 2, dim=1)
    top = probs.argmax(dim=1)
    one_hot = F.one_hot(torch.randint(0, 4, (50,), generator=g), 4).float()  # confidence exactly 1.0
    mixed = torch.cat([one_hot, probs[:50]])
    mixed_target = torch.randint(0, 4, (100,), generator=g)
    boundaries = torch.cat([torch.linspace(0, 1, n + 1) for n in N_BINS])  # values on every bin edge
    binary_edges = torch.cat([boundaries, torch.zeros(5), torch.ones(6)])  # even length
    return [
        ("all correct", "multiclass", probs, top),
        ("all wrong", "multiclass", probs, (top + 1) % 4),
        (
            "one bin",
            "binary",
            0.31 + 0.001 * torch.rand(100, generator=g),
            torch.randint(0, 2, (100,), generator=g),
        ),
        ("empty bins", "binary", torch.rand(12, generator=g), torch.randint(0, 2, (12,), generator=g)),
        ("confidence 1.0", "multiclass", mixed, mixed_target),
        ("only 1.0", "multiclass", one_hot, one_hot.argmax(dim=1)),
        (
            "bin edges, 0.0 and 1.0",
            "binary",
            binary_edges,
            torch.randint(0, 2, binary_edges.shape, generator=g),
        ),
        (
            "multilabel 0.0/1.0",
            "multilabel",
            binary_edges.reshape(-1, 2),
            torch.randint(0, 2, (binary_edges.numel() // 2, 2), generator=g),
        ),
    ]


@pytest.mark.parametrize("case", _edge_cases(), ids=lambda c: c[0])
@pytest.mark.parametrize("n_bins", N_BINS)
def test_edge_cases_match_torchmetrics(case, n_bins: int, path: str) -> None:
    _, task, preds, target = case
    for norm in NORMS:
        for input_ in ("probs", "auto"):
            ours = float(
                expected_calibration_error(preds, target, n_bins, task=task, norm=norm, input=input_)
            )
            assert ours == pytest.approx(reference(task, preds, target, n_bins, norm), abs=1e-6), (
                norm,
                input_,
            )


@pytest.mark.parametrize("input_", ["logits", "auto"])
def test_tied_top_labels_follow_first_index(input_: str, path: str) -> None:
    # Rows whose largest logit is shared: torchmetrics takes the first index as the prediction.
    logits = torch.tensor([[2.0, 2.0, 0.0], [0.0, 3.0, 3.0], [1.0, 1.0, 1.0], [5.0, 0.0, 1.0]]).repeat(5, 1)
    target = torch.tensor([1, 1, 2, 0]).repeat(5)
    for norm in NORMS:
        ours = float(expected_calibration_error(logits, target, n_bins=10, norm=norm, input=input_))
        assert ours == pytest.approx(reference("multiclass", logits, target, 10, norm), abs=1e-6)
    out = calibration_compute(calibration_update(calibration_state(10), logits, target, "multiclass"))
    assert float(out["accuracy"]) == pytest.approx(0.5)  # rows 2 and 4 right, rows 1 and 3 lose the tie


def test_bin_assignment_is_bit_exact() -> None:
    # Counts per bin, not just the error, equal torchmetrics' bucketize (including the extra slot for 1.0).
    preds = torch.cat([torch.linspace(0, 1, 16), torch.rand(500, generator=torch.Generator().manual_seed(1))])
    state = calibration_update(
        calibration_state(15, adaptive_sample=0), preds, torch.ones(516).long(), "binary"
    )
    index = torch.bucketize(preds, torch.linspace(0, 1, 16), right=True) - 1
    assert torch.equal(state.counts, torch.bincount(index, minlength=16).double())
    assert state.counts[-1] == 1  # the single exact 1.0


def test_all_correct_and_all_wrong_accuracy() -> None:
    probs = torch.softmax(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    state = calibration_update(calibration_state(10, adaptive_sample=0), probs, probs.argmax(1), "multiclass")
    assert float(calibration_compute(state)["accuracy"]) == 1.0
    state = calibration_update(
        calibration_state(10, adaptive_sample=0), probs, (probs.argmax(1) + 1) % 3, "multiclass"
    )
    out = calibration_compute(state)
    assert float(out["accuracy"]) == 0.0
    assert float(out["ece"]) == pytest.approx(float(probs.max(1).values.mean()), abs=1e-6)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_per_class_ece_is_one_vs_rest(task: str) -> None:
    logits, target = make_data(task, n=400, classes=4, seed=5)
    state = calibration_state(10, num_classes=4, per_class=True, adaptive_sample=0)
    out = calibration_compute(calibration_update(state, logits, target, task))
    probs = to_probs(task, logits)
    for c in range(4):
        outcome = (target == c).long() if task == "multiclass" else target[:, c]
        ref = float(binary_calibration_error(probs[:, c].contiguous(), outcome, n_bins=10))
        assert float(out["per_class_ece"][c]) == pytest.approx(ref, abs=1e-6)


# ------------------------------------------------------------------------------------ streaming


@pytest.mark.parametrize("task", TASKS)
def test_streaming_uneven_batches_equals_one_shot(task: str, path: str) -> None:
    logits, target = make_data(task, n=2000, seed=11)
    sizes = [1, 7, 300, 2, 513, 64, 1, 900, 212]
    whole = calibration_compute(stream(task, logits, target, [2000], adaptive_sample=5000))
    parts = calibration_compute(stream(task, logits, target, sizes, adaptive_sample=5000))
    assert_same(whole, parts, EXACT + ("ace",))
    for norm in NORMS:
        ref = reference(task, to_probs(task, logits), target, 15, norm)
        assert float(parts[KEY[norm]]) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_pending_rows_across_flushes_dtypes_and_large_batches(task: str, path: str) -> None:
    # Rows wait in a buffer of _PENDING_ROWS and are binned when it fills, when the dtype changes, for a batch
    # larger than the buffer and before every read: none of it may change a number.
    rows = _calibration_common._PENDING_ROWS
    per_row = 3 if task == "multilabel" else 1  # predictions per row of preds
    logits, target = make_data(task, n=3 * rows, classes=3, seed=23)
    sizes = [(rows - 5) // per_row, 7, 2 * rows + 1, 500]  # fills the buffer, then a batch too large for it
    sizes.append(3 * rows - sum(sizes))
    state = calibration_state(15, adaptive_sample=50_000)
    start = 0
    for i, size in enumerate(sizes):
        part = slice(start, start + size)
        preds = logits[part].double() if i == 3 else logits[part]  # a float64 batch forces a flush
        calibration_update(state, preds, target[part], task)
        start += size
        if i == 0:
            assert state.pending_fill == sizes[0] * per_row and int(state.counts.sum()) > 0  # a read bins them
            assert state.pending_fill == 0
    mixed = torch.cat([logits[: sum(sizes[:3])], logits[sum(sizes[:3]) : sum(sizes[:4])].double().float(),
                       logits[sum(sizes[:4]) :]])
    whole = calibration_compute(stream(task, mixed, target, [3 * rows], adaptive_sample=50_000))
    assert_same(whole, calibration_compute(state), EXACT + ("ace",), atol=1e-6)
    for norm in NORMS:
        ref = reference(task, to_probs(task, logits), target, 15, norm)
        assert float(calibration_compute(state)[KEY[norm]]) == pytest.approx(ref, abs=1e-6)


def test_state_made_in_inference_mode_is_used_outside() -> None:
    # Lightning's validation hooks run under inference mode; the state may be read or updated outside it later.
    logits, target = make_data("multiclass", n=300, seed=24)
    logits[7, 2] = float("nan")  # a weighted-out row, whose weight is written into the pending buffer
    expected = calibration_compute(stream("multiclass", logits, target, [200, 100], adaptive_sample=1000))
    with torch.inference_mode():
        inside = calibration_update(calibration_state(15, adaptive_sample=1000), logits[:200], target[:200],
                                    "multiclass")
    outside = calibration_state(15, adaptive_sample=1000)
    with torch.inference_mode():
        calibration_update(outside, logits[:200], target[:200], "multiclass")
    for state in (inside, outside):
        assert state.pending_fill == 200
        calibration_update(state, logits[200:], target[200:], "multiclass")  # outside inference mode
        assert_same(expected, calibration_compute(state), EXACT + ("ace",))
        state_from_tensors(state, [t.clone() for t in state_tensors(state)])
        assert int(calibration_compute(state)["nonfinite"]) == 1
    with torch.inference_mode():  # all inside, as in Lightning's validation loop
        state = calibration_update(calibration_state(15, adaptive_sample=1000), logits, target, "multiclass")
        assert_same(expected, calibration_compute(state), EXACT + ("ace",))


@pytest.mark.parametrize("task", TASKS)
def test_merge_of_halves_equals_whole(task: str) -> None:
    logits, target = make_data(task, n=1000, seed=12)
    state_kwargs = {
        "n_bins": 15,
        "num_classes": 5 if task != "binary" else None,
        "per_class": task != "binary",
        "adaptive_sample": 5000,
    }
    whole = calibration_update(calibration_state(**state_kwargs), logits, target, task)
    a = calibration_update(calibration_state(**state_kwargs, seed=1), logits[:300], target[:300], task)
    b = calibration_update(calibration_state(**state_kwargs, seed=2), logits[300:], target[300:], task)
    a_before = [t.clone() for t in state_tensors(a)]
    merged = calibration_merge(a, b)
    keys = EXACT + ("ace",) + (("per_class_ece",) if task != "binary" else ())
    assert_same(calibration_compute(whole), calibration_compute(merged), keys)
    assert all(torch.equal(x, y) for x, y in zip(a_before, state_tensors(a)))  # inputs untouched
    assert merged.seen == 1000


def test_merge_rejects_incompatible_states() -> None:
    with pytest.raises(ValueError, match="`b`"):
        calibration_merge(calibration_state(10), calibration_state(15))


@pytest.mark.parametrize("task", TASKS)
def test_state_tensors_round_trip(task: str) -> None:
    logits, target = make_data(task, n=800, seed=13)
    per_class = {"num_classes": 5, "per_class": True} if task != "binary" else {}
    whole = calibration_update(calibration_state(15, adaptive_sample=0, **per_class), logits, target, task)
    ranks = [
        calibration_update(
            calibration_state(15, adaptive_sample=0, **per_class), logits[i::2], target[i::2], task
        )
        for i in range(2)
    ]
    tensors = state_tensors(ranks[0])
    assert all(t.dtype == torch.float64 for t in tensors)
    reduced = [x + y for x, y in zip(tensors, state_tensors(ranks[1]))]  # what all_reduce(sum) gives
    state_from_tensors(ranks[0], reduced)
    keys = EXACT + (("per_class_ece",) if task != "binary" else ())
    assert_same(calibration_compute(whole), calibration_compute(ranks[0]), keys)
    with pytest.raises(ValueError, match="`tensors`"):
        state_from_tensors(ranks[0], reduced[:-1])


@pytest.mark.parametrize("task", TASKS)
def test_nonfinite_rows_excluded_and_counted(task: str, path: str) -> None:
    logits, target = make_data(task, n=300, seed=14)
    dirty = logits.clone()
    bad = torch.tensor([0, 5, 17, 299])
    if task == "binary":
        dirty[bad] = torch.tensor([float("nan"), float("inf"), -float("inf"), float("nan")])
    else:
        dirty[bad, torch.tensor([0, 1, 2, 4])] = torch.tensor(
            [float("nan"), float("inf"), -float("inf"), 1e300]
        )
        dirty[bad[-1], 4] = float("nan")
    keep = torch.ones(300, dtype=torch.bool)
    keep[bad] = False
    for input_ in ("auto", "logits"):
        out = calibration_compute(stream(task, dirty, target, [100, 100, 100], input_, adaptive_sample=2000))
        clean = calibration_compute(stream(task, logits[keep], target[keep], [296], adaptive_sample=2000))
        assert int(out["nonfinite"]) == 4 and int(clean["nonfinite"]) == 0
        assert_same(out, clean, EXACT[:-1] + ("ace",))
        assert float(expected_calibration_error(dirty, target, task=task, input=input_)) == pytest.approx(
            float(clean["ece"]), abs=1e-7
        )


def test_probs_with_nonfinite_rows_still_auto_detected_as_probs(path: str) -> None:
    probs = torch.softmax(torch.randn(50, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    dirty = probs.clone()
    dirty[3] = float("nan")
    target = torch.zeros(50, dtype=torch.long)
    auto = expected_calibration_error(dirty, target, n_bins=5)
    explicit = expected_calibration_error(dirty, target, n_bins=5, input="probs")
    assert torch.equal(auto, explicit)


def test_probs_not_summing_to_one(path: str) -> None:
    preds = torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.2, 0.6]])
    target = torch.tensor([0, 2])
    with pytest.raises(ValueError, match="Expected argument `input`.*do not sum to 1.*but got 'probs'"):
        expected_calibration_error(preds, target, input="probs")
    with pytest.raises(ValueError, match="`input`"):
        calibration_update(calibration_state(15), preds, target, "multiclass", input="probs")
    # "auto" reads such rows as logits
    assert torch.equal(
        expected_calibration_error(preds, target), expected_calibration_error(preds, target, input="logits")
    )


def test_argument_errors() -> None:
    preds, target = torch.tensor([0.1, 0.6, 0.8, 0.3]), torch.tensor([0, 1, 1, 0])
    three = torch.tensor([[0.2, 0.3, 0.5]]).repeat(4, 1)
    with pytest.raises(
        ValueError, match=r"^Expected argument `n_bins` to be an integer larger than 0, but got 0\.$"
    ):
        expected_calibration_error(preds, target, n_bins=0, task="binary")
    with pytest.raises(ValueError, match="`task`"):
        expected_calibration_error(preds, target, task="regression")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`norm`"):
        expected_calibration_error(preds, target, task="binary", norm="l3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`preds`"):
        expected_calibration_error(target, target, task="binary")
    with pytest.raises(ValueError, match="`target`"):
        expected_calibration_error(preds, target + 1, task="binary")
    with pytest.raises(ValueError, match="`target`"):
        expected_calibration_error(three, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="`target`"):
        expected_calibration_error(three, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="`input`"):
        expected_calibration_error(preds * 2, target, task="binary", input="probs")
    with pytest.raises(ValueError, match="`num_classes`"):
        calibration_state(10, per_class=True)
    state = calibration_update(calibration_state(10), preds, target, "binary")
    with pytest.raises(ValueError, match="`task`"):
        calibration_update(state, three[:, :2], target, "multiclass")
    with pytest.raises(ValueError, match="`task`"):
        calibration_update(calibration_state(10, num_classes=2, per_class=True), preds, target, "binary")


# ------------------------------------------------------------------------------------ adaptive ECE and sample


def direct_equal_mass_ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    order = np.argsort(confidence, kind="stable")
    conf, acc = confidence[order].astype(np.float64), correct[order].astype(np.float64)
    total = len(conf)
    return float(
        sum(
            abs(a.mean() - c.mean()) * len(c) / total
            for c, a in zip(np.array_split(conf, n_bins), np.array_split(acc, n_bins))
            if len(c)
        )
    )


@pytest.mark.parametrize("n_bins", [1, 7, 15])
@pytest.mark.parametrize("task", TASKS)
def test_adaptive_ece_equals_direct_equal_mass(task: str, n_bins: int, path: str) -> None:
    logits, target = make_data(task, n=1000, seed=15)
    out = calibration_compute(
        stream(task, logits, target, [333, 333, 334], n_bins=n_bins, adaptive_sample=5000)
    )
    probs = to_probs(task, logits)
    if task == "multiclass":
        confidence, predicted = probs.max(dim=1)
        correct = predicted == target
    else:
        confidence, correct = probs.flatten(), target.flatten()
    assert float(out["ace"]) == pytest.approx(
        direct_equal_mass_ece(confidence.numpy(), correct.numpy(), n_bins), abs=1e-6
    )


def test_reservoir_is_bounded_deterministic_and_uniform() -> None:
    g = torch.Generator().manual_seed(99)
    preds = torch.rand(10_000, generator=g)
    target = torch.ones(10_000, dtype=torch.long)

    def run(seed: int):
        state = calibration_state(10, adaptive_sample=500, seed=seed)
        for chunk in range(0, 10_000, 250):
            calibration_update(
                state, preds[chunk : chunk + 250], target[chunk : chunk + 250], "binary", validate_args=False
            )
        return state

    a, b, c = run(0), run(0), run(1)
    assert tuple(a.sample.shape) == (1000, 3)  # fixed buffer, independent of the 10 000 predictions
    sample_a, sample_c = _sample(a)[0], _sample(c)[0]
    assert sample_a.numel() == 500
    assert torch.equal(torch.sort(sample_a).values, torch.sort(_sample(b)[0]).values)
    assert not torch.equal(torch.sort(sample_a).values, torch.sort(sample_c).values)
    assert abs(float(sample_a.mean()) - 0.5) < 0.05  # uniform preds -> sample mean near 0.5
    assert torch.isfinite(calibration_compute(a)["ace"])


def test_threshold_cut_keeps_the_exact_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CPU's cheap cut and drop on arrival (by a key threshold) keep exactly the rows the sync-free path keeps
    # with topk cuts alone: the same keys, so the same sample.
    preds = torch.rand(60_000, generator=torch.Generator().manual_seed(5))
    target = (preds > 0.3).long()

    def run() -> torch.Tensor:
        state = calibration_state(10, adaptive_sample=700, seed=4)
        for start in range(0, 60_000, 333):
            calibration_update(state, preds[start : start + 333], target[start : start + 333], "binary")
        return torch.sort(_sample(state)[0]).values, state

    cheap, state = run()
    assert state.sample_threshold < 0.1 and state.sample_fill <= 1400  # the threshold has been in use
    monkeypatch.setattr(_calibration_common, "_branch_on_values", lambda x: False)
    exact, state = run()
    assert state.sample_threshold == float("inf")
    assert torch.equal(cheap, exact)


def test_reservoir_with_batches_larger_than_the_sample() -> None:
    logits, target = make_data("binary", n=5000, seed=19)
    state = calibration_state(10, adaptive_sample=300)
    calibration_update(state, logits[:3000], target[:3000], "binary")
    calibration_update(state, logits[3000:], target[3000:], "binary")
    assert state.sample.shape[0] <= 600  # never more than 2 * adaptive_sample rows
    confidence, correct = _sample(state)
    assert confidence.numel() == correct.numel() == 300
    assert torch.isin(confidence, torch.sigmoid(logits)).all()
    other = calibration_update(calibration_state(10, adaptive_sample=300, seed=1), logits, target, "binary")
    merged = calibration_merge(state, other)
    assert merged.sample.shape[0] <= 600 and _sample(merged)[0].numel() == 300
    assert state.sample_fill <= 600 and torch.isfinite(calibration_compute(merged)["ace"])


def test_global_rng_untouched() -> None:
    logits, target = make_data("multiclass", n=500, seed=16)
    before = torch.get_rng_state()
    state = calibration_state(15, adaptive_sample=100, seed=3)
    for start in range(0, 500, 50):
        calibration_update(state, logits[start : start + 50], target[start : start + 50], "multiclass")
    calibration_compute(calibration_merge(state, state))
    fit_temperature(logits, target, max_iter=5)
    assert torch.equal(before, torch.get_rng_state())


def test_no_sample_gives_nan_ace() -> None:
    state = calibration_update(
        calibration_state(5, adaptive_sample=0), torch.linspace(0, 1, 10), torch.ones(10).long(), "binary"
    )
    assert torch.isnan(calibration_compute(state)["ace"])
    assert state.generator is None


def test_empty_state_is_nan() -> None:
    out = calibration_compute(calibration_state(5, adaptive_sample=10))
    assert int(out["count"]) == 0
    assert all(torch.isnan(out[key]) for key in ("ece", "mce", "rmsce", "ace", "brier", "nll"))


# ------------------------------------------------------------------------------------ reliability, Brier, NLL


def test_reliability_bins() -> None:
    preds = torch.tensor([0.05, 0.1, 0.45, 0.95, 1.0, 1.0])
    target = torch.tensor([0, 1, 1, 1, 1, 0])
    bins = reliability_bins(preds, target, n_bins=4, task="binary")
    assert torch.equal(bins["edges"], torch.linspace(0, 1, 5))
    assert bins["counts"].tolist() == [2, 1, 0, 3]  # the 1.0s fold into the last bin
    torch.testing.assert_close(bins["confidence"][[0, 1, 3]], torch.tensor([0.075, 0.45, 2.95 / 3]))
    torch.testing.assert_close(bins["accuracy"][[0, 1, 3]], torch.tensor([0.5, 1.0, 2 / 3]))
    assert torch.isnan(bins["accuracy"][2]) and torch.isnan(bins["confidence"][2])


@pytest.mark.parametrize("task", TASKS)
def test_brier_and_nll_against_direct_formulas(task: str, path: str) -> None:
    logits, target = make_data(task, n=500, seed=17)
    probs = to_probs(task, logits).double()
    if task == "multiclass":
        brier = ((probs - F.one_hot(target, 5)) ** 2).sum(dim=1).mean()
        nll = -probs.gather(1, target[:, None]).log().mean()
        reference_ce = F.cross_entropy(logits, target)
    else:
        brier = ((probs - target) ** 2).mean()
        nll = -(target * probs.log() + (1 - target) * (1 - probs).log()).mean()
        reference_ce = F.binary_cross_entropy_with_logits(logits, target.float())
    for preds, kind in ((logits, "logits"), (to_probs(task, logits), "probs")):
        assert float(brier_score(preds, target, task=task, input=kind)) == pytest.approx(
            float(brier), abs=1e-6
        )
        assert float(negative_log_likelihood(preds, target, task=task, input=kind)) == pytest.approx(
            float(nll), abs=1e-5
        )
    assert float(negative_log_likelihood(logits, target, task=task)) == pytest.approx(
        float(reference_ce), abs=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nll_of_underflowing_probabilities_is_cross_entropy(dtype: torch.dtype, path: str) -> None:
    # Logits spanning more than -log(tiny): p_y underflows to 0 (or a subnormal) for some rows, and the NLL must
    # still be F.cross_entropy's; spans below that skip the underflow check.
    logits, target = make_data("multiclass", n=200, seed=25)
    for scale in (1.0, 400.0):
        wide = (logits * scale).to(dtype)
        ours = negative_log_likelihood(wide, target, input="logits")
        assert float(ours) == pytest.approx(float(F.cross_entropy(wide.double(), target)), rel=1e-5)
        assert torch.isfinite(ours)


def test_nll_from_probs_is_clamped_like_bce() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    assert float(negative_log_likelihood(probs, torch.tensor([1, 0]), input="probs")) == pytest.approx(
        (100 + np.log(2)) / 2, abs=1e-5
    )


# ------------------------------------------------------------------------------------ temperature scaling


def over_confident(n: int = 20_000, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(21)
    calibrated = torch.randn(n, classes, generator=g) * 2
    target = torch.multinomial(torch.softmax(calibrated, dim=1), 1, generator=g).squeeze(1)
    return calibrated * 3, target


def test_temperature_recovers_three_and_lowers_ece() -> None:
    logits, target = over_confident()
    original = logits.clone()
    temperature = fit_temperature(logits, target)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert torch.equal(logits, original) and not logits.requires_grad
    before = float(expected_calibration_error(logits, target, input="logits"))
    after = float(expected_calibration_error(logits / temperature, target, input="logits"))
    assert after < before / 3


def test_temperature_binary_and_multilabel() -> None:
    g = torch.Generator().manual_seed(22)
    calibrated = torch.randn(8000, generator=g) * 2
    target = (torch.rand(8000, generator=g) < torch.sigmoid(calibrated)).long()
    assert fit_temperature(calibrated * 3, target) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(calibrated.reshape(-1, 4) * 3, target.reshape(-1, 4)) == pytest.approx(
        3.0, rel=0.1
    )


def test_temperature_inside_inference_mode() -> None:
    logits, target = over_confident(n=2000, classes=5)
    with torch.inference_mode():
        frozen = logits.clone()
        temperature = fit_temperature(frozen, target, max_iter=20)
    assert 1.5 < temperature < 6.0


def test_temperature_errors() -> None:
    with pytest.raises(ValueError, match="`max_iter`"):
        fit_temperature(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]), max_iter=0)
    with pytest.raises(ValueError, match="`logits`"):
        fit_temperature(torch.full((3, 2), float("nan")), torch.tensor([0, 1, 0]))
