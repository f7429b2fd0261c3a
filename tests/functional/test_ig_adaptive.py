"""The adaptive integrated-gradients engine's split count (issue 14): a probe splits as many cells as carry its
excess error over the tolerance, so it stops as soon as its error dips under it. Checked on paths whose integrals
are known in closed form, against the SHAP engine's count (the fewest cells carrying 30% of the discrepancy)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_xai.functional.attribution._adaptive import Paths, _PathGroup, end_values, integrate_to_tolerance
from lightning_xai.functional.shap._cells import CellSplitting
from lightning_xai.functional.shap._rows import Settings

STEEP = 40.0


def switches(centres: Tensor) -> Paths:
    """32 probes of ``f(x) = sum_j tanh(40 (x_j - c_j))`` from zero baselines: each path is a sum of steep
    switches at different points. The function is separable, so the exact attributions are
    ``phi_j = tanh(40 (x_j - c_j)) + tanh(40 c_j)``."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, centres.numel(), generator=g) * 1.5 + 0.2

    def f(points: Tensor) -> Tensor:
        return torch.tanh(STEEP * (points - centres)).sum(1)

    return Paths(f, (x,), (torch.zeros_like(x),), (), None)


def relative_errors(paths: Paths, attrs: tuple[Tensor, ...], fx: Tensor, fb: Tensor) -> Tensor:
    return (attrs[0].double().sum(1) - (fx - fb)).abs() / (fx - fb).abs()


@pytest.mark.parametrize("tol", [0.01, 0.001])
def test_excess_split_count_meets_the_tolerance_with_fewer_rows(tol: float, monkeypatch: pytest.MonkeyPatch) -> None:
    centres = torch.rand(6, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    paths = switches(centres)
    attrs, rows, (fx, fb) = integrate_to_tolerance(paths, tol, 1024, 64)
    assert bool((relative_errors(paths, attrs, fx, fb) <= tol).all())
    assert bool((rows >= 8).all()) and bool((rows < 1024).all())

    # the previous count on the same probes: 30% of the discrepancy per round, part chunks topped up
    monkeypatch.setattr(_PathGroup, "_split_mass", lambda self, total: 0.3 * total)
    monkeypatch.setattr(_PathGroup, "_fill_chunks", CellSplitting._fill_chunks)
    old_attrs, old_rows, _ = integrate_to_tolerance(paths, tol, 1024, 64)
    assert bool((relative_errors(paths, old_attrs, fx, fb) <= tol).all())
    assert int(rows.sum()) < 0.8 * int(old_rows.sum()), (int(rows.sum()), int(old_rows.sum()))


def test_one_switch_reaches_its_exact_attribution() -> None:
    """With one input the completeness error is the error of the attribution itself: it matches the closed form."""
    centre = torch.tensor([0.37])
    paths = switches(centre)
    attrs, rows, (fx, fb) = integrate_to_tolerance(paths, 1e-3, 1024, 64)
    x = paths.x[0]
    exact = torch.tanh(STEEP * (x - centre)) + torch.tanh(STEEP * centre)
    torch.testing.assert_close(fx - fb, exact[:, 0].double(), atol=1e-5, rtol=1e-5)
    err = (attrs[0] - exact).abs()[:, 0] / exact[:, 0].abs()
    assert float(err.max()) <= 1e-3 + 1e-5 and bool((rows > 8).any())


def test_a_probe_just_above_the_tolerance_splits_one_cell() -> None:
    """The excess error decides the count: tiny excess, one cell (two rows); an excess as large as the whole
    discrepancy, as many cells as the quarter cap allows."""
    paths = switches(torch.tensor([0.37, 0.61]))
    results = {}
    for name, excess in (("near", 1e-9), ("far", float("inf"))):
        settings = Settings(8, 64, torch.Generator(), 0.01, 1024, "lattice")
        group = _PathGroup(paths, torch.arange(4), settings, *end_values(paths, 64), 8)
        group.run()
        group.excess = torch.full((4,), excess, dtype=torch.float64)
        assert group.plan(torch.ones(4, dtype=torch.bool))
        results[name] = torch.bincount(group.pending.probe, minlength=4)
    assert results["near"].tolist() == [2] * 4  # one trisection: two new rows per probe
    assert results["far"].tolist() == [4] * 4  # a quarter of 8 cells: two trisections per probe



def test_median_stop_meets_the_median_with_fewer_rows_and_reports_the_rest() -> None:
    """``stop="median"`` ends once the median probe meets the tolerance: fewer rows than every probe needs, the
    median within it, and the probes still above it are there to be reported (``converged`` in ``attribute``)."""
    paths = switches(torch.rand(6, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1)
    every, every_rows, (fx, fb) = integrate_to_tolerance(paths, 0.001, 1024, 64)
    median, median_rows, _ = integrate_to_tolerance(paths, 0.001, 1024, 64, stop="median")
    rel_every, rel_median = relative_errors(paths, every, fx, fb), relative_errors(paths, median, fx, fb)
    assert bool((rel_every <= 0.001).all())
    assert float(rel_median.median()) <= 0.001 < float(rel_median.max())
    assert int(median_rows.sum()) < int(every_rows.sum())


def test_attribute_median_stop_reports_unconverged_probes_and_refuses_unknown_stops() -> None:
    from torch import nn

    from lightning_xai.explainers.attribution import IntegratedGradientsExplainer
    from lightning_xai.functional.attribution import attribute

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    x, target = torch.randn(16, 6) * 3, torch.zeros(16, dtype=torch.long)
    r = attribute(net, x, target, "integrated_gradients", completeness_tol=1e-3, completeness_stop="median")
    assert float(r.relative_error.median()) <= 1e-3
    torch.testing.assert_close(r.converged, r.relative_error <= 1e-3)  # honest per probe, whatever the stop
    with pytest.raises(ValueError, match="completeness_stop"):
        attribute(net, x, target, "integrated_gradients", completeness_tol=0.01, completeness_stop="mean")
    assert not IntegratedGradientsExplainer(completeness_stop="median").splits_on(torch.device("cpu"))
    assert IntegratedGradientsExplainer().splits_on(torch.device("cpu"))
    with pytest.raises(ValueError, match="completeness_stop"):
        IntegratedGradientsExplainer(completeness_stop="all")  # type: ignore[arg-type]
