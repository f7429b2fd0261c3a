"""The probe: scikit-learn's logistic regression on standardised features, stratified k-fold, one fixed seed.

The steps, shared by :func:`linear_probe` and :func:`fit_probes`: :func:`check_probe_labels` (before any forward:
enough samples of every class for ``cv`` folds), :func:`control_labels` (the control task: the labels permuted by a
``torch.Generator``) and ``_cv_scores`` (``cross_val_score`` of ``Pipeline(StandardScaler(),
LogisticRegression(max_iter, random_state=seed))`` over ``StratifiedKFold(cv, shuffle=True, random_state=seed)``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_xai._checks import check_non_negative_int, check_positive_int, expected
from lightning_xai.functional.probing._result import LinearProbe, ProbingResult

__all__ = ["check_probe_labels", "control_labels", "fit_probes", "linear_probe"]


def _sklearn() -> Any:
    try:
        from sklearn import linear_model, model_selection, pipeline, preprocessing
        from sklearn.exceptions import ConvergenceWarning
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ModuleNotFoundError(
            "Linear probes need scikit-learn: install it with `pip install 'scikit-learn>=1.2'`.") from err
    return linear_model, model_selection, pipeline, preprocessing, ConvergenceWarning


def check_probe_labels(labels: Tensor, cv: int, name: str = "labels") -> Tensor:
    """Check that ``labels`` are integer classes, at least two, each with ``cv`` samples; return them ``(N,)``.

    Args:
        labels: ``(N,)`` (or ``(N, 1)``) integer or boolean class labels.
        cv: Folds of the stratified cross-validation (at least 2).
        name: What the labels are, in messages (``"labels"`` or a concept's name).

    Raises:
        ValueError: If ``cv`` is below 2, the labels are not integer classes, there is one class only, or the rarest
            class has fewer samples than ``cv`` (the message suggests a smaller ``cv``).

    Example:
        >>> check_probe_labels(torch.tensor([0, 1, 0, 1, 0, 1]), cv=3).tolist()
        [0, 1, 0, 1, 0, 1]
    """
    if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
        raise ValueError(expected("cv", "an integer of at least 2 (folds of the cross-validation)", cv))
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(expected(name, "integer class labels of shape (N,)",
                                  f"{labels.dtype} of shape {tuple(labels.shape)}"))
    classes, counts = torch.unique(labels.cpu(), return_counts=True)
    if classes.numel() < 2:
        raise ValueError(expected(name, "at least two classes to probe", f"only class {classes.tolist()} in "
                                  f"{labels.numel()} samples"))
    rarest = int(counts.argmin())
    if int(counts[rarest]) < cv:
        fewest = int(counts[rarest])
        hint = f"`cv={fewest}`" if fewest >= 2 else "more samples of that class"
        raise ValueError(
            expected("cv", f"at most {fewest}, the number of samples of the rarest class ({name} "
                     f"{int(classes[rarest])}) among the {labels.numel()} probed", cv)
            + f" Every fold needs a sample of every class: use a smaller `cv` ({hint}) or probe more samples.")
    return labels


def control_labels(labels: Tensor, generator: torch.Generator) -> Tensor:
    """The control task: ``labels`` permuted with ``generator`` (class counts kept, any link to the input gone).

    Example:
        >>> control_labels(torch.tensor([0, 0, 0, 1, 1, 1]), torch.Generator().manual_seed(0)).tolist()
        [0, 1, 1, 0, 0, 1]
    """
    perm = torch.randperm(labels.numel(), generator=generator)
    return labels.cpu()[perm]


def _cv_scores(features: np.ndarray, labels: np.ndarray, cv: int, seed: int, max_iter: int) -> tuple[np.ndarray,
                                                                                                      bool]:
    linear_model, model_selection, pipeline, preprocessing, convergence = _sklearn()
    probe = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                   linear_model.LogisticRegression(max_iter=max_iter, random_state=seed))
    folds = model_selection.StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # one BLAS thread: scipy's L-BFGS-B spends its time in small BLAS calls that more threads only slow down
    # (measured 9x faster on 1600 x 1024 features, 10 classes, 2 cores)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("always", convergence)
        scores = model_selection.cross_val_score(probe, features, labels, cv=folds, error_score="raise")
    converged = not any(issubclass(w.category, convergence) for w in caught)
    for w in caught:  # give back what is not ours to silence
        if not issubclass(w.category, convergence):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return np.asarray(scores, dtype=np.float64), converged


def _features(features: Tensor, n: int, name: str) -> np.ndarray:
    if features.dim() != 2 or features.shape[0] != n:
        raise ValueError(expected("features", f"a (N, D) tensor with N = {n} rows, one per label",
                                  tuple(features.shape)))
    array = features.detach().cpu().double().numpy()
    if not np.isfinite(array).all():
        raise ValueError(expected("features", "finite activations", f"NaN or inf in the activations of {name}"))
    return array


def linear_probe(features: Tensor, labels: Tensor, cv: int = 5, seed: int = 0, max_iter: int = 1000,
                 control: bool = True, generator: torch.Generator | None = None) -> LinearProbe:
    """Cross-validated accuracy of a logistic-regression probe of ``labels`` from ``features``, with a control task.

    The probe is ``Pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))`` scored by
    ``cross_val_score`` over ``StratifiedKFold(cv, shuffle=True, random_state=seed)``. The control task (Hewitt &
    Liang 2019) is the same probe on :func:`control_labels`; the selectivity is accuracy minus control accuracy.

    Args:
        features: ``(N, D)`` pooled activations (any float dtype; fitted in float64).
        labels: ``(N,)`` integer classes.
        cv: Folds (each class needs at least ``cv`` samples).
        seed: Seed of the folds and the regression (and of the control permutation without ``generator``).
        max_iter: Iterations of the LBFGS solver per fit.
        control: Also fit the control task.
        generator: Draws the control permutation (default ``torch.Generator().manual_seed(seed)``).

    Returns:
        A :class:`LinearProbe`.

    Raises:
        ValueError: If the labels cannot be split into ``cv`` stratified folds, or ``features`` is not ``(N, D)``
            and finite.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.arange(60) % 2
        >>> x = torch.randn(60, 4, generator=g) + 3 * y[:, None]
        >>> p = linear_probe(x, y, cv=3)
        >>> p.accuracy > 0.9, abs(p.control_accuracy - 0.5) < 0.2
        (True, True)
    """
    check_positive_int("max_iter", max_iter)
    check_non_negative_int("seed", seed)
    labels = check_probe_labels(labels, cv)
    x = _features(features, labels.numel(), "this layer")
    y = labels.cpu().numpy()
    start = time.perf_counter()
    scores, converged = _cv_scores(x, y, cv, seed, max_iter)
    control_scores = np.array([])
    if control:
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        control_scores, control_converged = _cv_scores(x, control_labels(labels, generator).numpy(), cv, seed,
                                                       max_iter)
        converged = converged and control_converged
    counts = np.unique(y, return_counts=True)[1]
    nan = float("nan")
    return LinearProbe(
        accuracy=float(scores.mean()), accuracy_std=float(scores.std()), fold_accuracy=tuple(map(float, scores)),
        control_accuracy=float(control_scores.mean()) if control else nan,
        control_std=float(control_scores.std()) if control else nan,
        control_fold_accuracy=tuple(map(float, control_scores)), chance=float(counts.max() / counts.sum()),
        n_samples=int(y.size), n_features=int(x.shape[1]), n_classes=int(counts.size), converged=converged,
        seconds=time.perf_counter() - start)


def fit_probes(features: Mapping[str, Tensor], labels: Tensor, target: str = "label", cv: int = 5, seed: int = 0,
               max_iter: int = 1000, control: bool = True, deadline: float | None = None,
               order: Sequence[str] | None = None) -> ProbingResult:
    """Probe ``labels`` from every layer's features, in order, while ``time.monotonic()`` is before ``deadline``.

    The control permutation is drawn once, from ``torch.Generator().manual_seed(seed)``, and shared by the layers.
    Layers whose turn comes after the deadline are not fitted and listed in ``skipped``.

    Example:
        >>> y = torch.arange(40) % 2
        >>> g = torch.Generator().manual_seed(0)
        >>> feats = {"a": torch.randn(40, 3, generator=g), "b": y[:, None] + 0.1 * torch.randn(40, 1, generator=g)}
        >>> r = fit_probes(feats, y, cv=4)
        >>> list(r.probes), r.probes["b"].accuracy
        (['a', 'b'], 1.0)
    """
    labels = check_probe_labels(labels, cv, name="labels" if target == "label" else target)
    permuted = control_labels(labels, torch.Generator().manual_seed(seed)) if control else None
    probes: dict[str, LinearProbe] = {}
    skipped: list[str] = []
    for layer in (order if order is not None else list(features)):
        if skipped or (deadline is not None and time.monotonic() >= deadline):
            skipped.append(layer)
            continue
        _features(features[layer], labels.numel(), f"layer {layer!r}")  # names the layer when not finite
        probe = linear_probe(features[layer], labels, cv, seed, max_iter, control=False)
        if permuted is not None:
            ctl = linear_probe(features[layer], permuted, cv, seed, max_iter, control=False)
            probe = replace(probe, control_accuracy=ctl.accuracy, control_std=ctl.accuracy_std,
                            control_fold_accuracy=ctl.fold_accuracy, converged=probe.converged and ctl.converged,
                            seconds=probe.seconds + ctl.seconds)
        probes[layer] = probe
    return ProbingResult(target, probes, tuple(skipped), cv=cv, seed=seed)
