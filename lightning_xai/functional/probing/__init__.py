"""Probing classifiers: where in a network is a label (or a concept) linearly decodable?

Pure torch for the activations, scikit-learn for the probe. The steps, one private module each:

* ``_capture``: :func:`capture_activations` runs one forward with a hook per named layer, pools each output as it
  is produced (memory ``batch x width``) and removes the hooks in ``finally``;
* ``_pool``: :func:`pool_activations` (``mean``, ``max`` over space/time/tokens, ``cls`` token, ``flatten`` with a
  size cap), the feature axis read off the layer (:func:`feature_axis`);
* ``_fit``: :func:`linear_probe`, ``StandardScaler`` + ``LogisticRegression`` in a scikit-learn pipeline scored by
  ``cross_val_score`` over stratified folds with one seed, a control task on labels permuted by a
  ``torch.Generator`` (:func:`control_labels`, Hewitt & Liang 2019) and the selectivity; :func:`fit_probes` over
  many layers within a deadline; :func:`check_probe_labels` before any forward;
* ``_auto``: :func:`probe_layers`, one layer per transformer block or convolutional stage;
* ``_result``: the typed results :class:`LinearProbe` and :class:`ProbingResult`.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> y = torch.arange(40) % 2
    >>> x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0)) + 4 * y[:, None]  # the label, linearly
    >>> feats = capture_activations(net, ["0", "2"], lambda: net(x))
    >>> r = fit_probes(feats, y, cv=4)
    >>> sorted(r.probes), r.probes["0"].accuracy > 0.9
    (['0', '2'], True)
"""

import torch  # noqa: F401  (the docstring example uses it)

from lightning_xai.functional.probing._auto import probe_layers
from lightning_xai.functional.probing._capture import capture_activations
from lightning_xai.functional.probing._fit import check_probe_labels, control_labels, fit_probes, linear_probe
from lightning_xai.functional.probing._pool import POOLINGS, Pooling, feature_axis, pool_activations
from lightning_xai.functional.probing._result import LinearProbe, ProbingResult

__all__ = [
    "POOLINGS",
    "LinearProbe",
    "Pooling",
    "ProbingResult",
    "capture_activations",
    "check_probe_labels",
    "control_labels",
    "feature_axis",
    "fit_probes",
    "linear_probe",
    "pool_activations",
    "probe_layers",
]
