"""One ``target`` check serves Grad-CAM, SHAP and the faithfulness metrics: same rules, errors name ``target``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.functional import deletion_auc, expected_gradients, grad_cam


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def _calls(net: nn.Module, x: torch.Tensor):
    return {
        "grad_cam": lambda t: grad_cam(net, x, t, target_layer=net[0]),
        "expected_gradients": lambda t: expected_gradients(net, x, torch.zeros(2, 3, 6, 6), t, nsamples=4),
        "deletion_auc": lambda t: deletion_auc(net, x, x.abs(), t, steps=2),
    }


@pytest.mark.parametrize("fn", ["grad_cam", "expected_gradients", "deletion_auc"])
@pytest.mark.parametrize(
    ("target", "error"),
    [(-1, ValueError), (torch.tensor([0, -2]), ValueError), (torch.tensor([0.0, 1.0]), TypeError),
     (torch.tensor([0, 1, 2]), ValueError), (True, TypeError), ("pred", TypeError)],
)
def test_bad_targets_are_refused_alike(fn: str, target: object, error: type[Exception]) -> None:
    net, x = _net(), torch.rand(2, 3, 6, 6)
    with pytest.raises(error, match="target"):
        _calls(net, x)[fn](target)


@pytest.mark.parametrize("fn", ["grad_cam", "expected_gradients", "deletion_auc"])
def test_int_0d_and_int32_targets_mean_the_same(fn: str) -> None:
    net, x = _net(), torch.rand(2, 3, 6, 6)
    call = _calls(net, x)[fn]
    results = [call(t) for t in (1, torch.tensor(1), torch.tensor([1, 1], dtype=torch.int32))]
    values = [r if isinstance(r, torch.Tensor) else r.values[0] for r in results]
    for v in values[1:]:
        torch.testing.assert_close(v, values[0])
