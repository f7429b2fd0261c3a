"""shap's own ``GradientExplainer`` on any model of the input contract: the tests' reference and an engine."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_xai.functional.shap._inputs import Prepared, forward_rows, score_rows

__all__: list[str] = []


class ScoreModel(nn.Module):
    """Present one probe of a prepared model to shap as ``module(*explained) -> (rows, 1)`` target scores.

    Passed-through inputs (masks, the token ids whose embeddings are substituted) are the probe's own rows,
    repeated to the batch shap sends.
    """

    def __init__(self, prep: Prepared) -> None:
        super().__init__()
        self.model = (
            prep.model
        )  # a submodule, so shap's eval()/zero_grad() reach it (and the guard undoes them)
        self.prep = prep
        self.probe = 0

    def forward(self, *points: Tensor) -> Tensor:
        idx = torch.full((points[0].shape[0],), self.probe, dtype=torch.long)
        return score_rows(forward_rows(self.prep, idx, list(points)), self.prep.target, idx)[:, None]


def _import_shap() -> Any:
    try:
        import shap
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ModuleNotFoundError(
            "`shap_gradient_reference` needs shap: install it with `pip install 'shap>=0.45'`."
        ) from err
    return shap


def shap_values(prep: Prepared, nsamples: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """shap's expected gradients for every probe, one ``shap_values`` call per probe (shap loops over probes
    itself; one call per probe lets the wrapper hold that probe's passed-through inputs and target). Must run
    inside a guard: shap calls ``eval()``/``zero_grad()`` and reseeds the global numpy RNG."""
    shap = _import_shap()
    wrapper = ScoreModel(prep)
    explainer = shap.GradientExplainer(wrapper, list(prep.bg), batch_size=batch_size)
    per_probe: list[list[Tensor]] = [[] for _ in prep.x]
    for b in range(prep.batch):
        wrapper.probe = b
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        phis = explainer.shap_values([x[b : b + 1] for x in prep.x], nsamples=nsamples, rseed=seed)
        phis = phis if isinstance(phis, list) else [phis]
        for i, phi in enumerate(phis):
            per_probe[i].append(torch.from_numpy(np.asarray(phi)[..., 0]).float())
    return [torch.cat(v) for v in per_probe]
