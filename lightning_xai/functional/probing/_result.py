"""The typed results of probing: one layer's probe, and one target's probes over the layers of one epoch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LinearProbe", "ProbingResult"]


@dataclass(frozen=True)
class LinearProbe:
    """A cross-validated logistic-regression probe of one layer's pooled activations.

    Args:
        accuracy: Mean held-out accuracy over the ``cv`` folds.
        accuracy_std: Standard deviation (``ddof=0``, as ``scores.std()``) of the fold accuracies.
        fold_accuracy: The accuracy of each fold.
        control_accuracy: The same probe on the control task (labels permuted); NaN without a control task.
        control_std: Its standard deviation over folds; NaN without a control task.
        control_fold_accuracy: The control accuracy of each fold (empty without a control task).
        chance: The accuracy of always answering the most frequent class.
        n_samples: Probed samples.
        n_features: Width of the pooled activations.
        n_classes: Distinct labels.
        converged: Whether every fit converged within ``max_iter``.
        seconds: Wall time of the fits.

    Example:
        >>> p = LinearProbe(0.9, 0.05, (0.85, 0.95), 0.5, 0.02, (0.48, 0.52), 0.5, 40, 8, 2, True, 0.1)
        >>> round(p.selectivity, 3)
        0.4
    """

    accuracy: float
    accuracy_std: float
    fold_accuracy: tuple[float, ...]
    control_accuracy: float
    control_std: float
    control_fold_accuracy: tuple[float, ...]
    chance: float
    n_samples: int
    n_features: int
    n_classes: int
    converged: bool
    seconds: float

    @property
    def selectivity(self) -> float:
        """Accuracy minus control accuracy (Hewitt & Liang 2019); NaN without a control task."""
        return self.accuracy - self.control_accuracy

    @property
    def has_control(self) -> bool:
        return not math.isnan(self.control_accuracy)

    def summary(self) -> dict[str, Any]:
        """Plain values for JSON (``null`` for the control values when there is no control task)."""
        def num(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        return {"accuracy": self.accuracy, "accuracy_std": self.accuracy_std, "fold_accuracy": list(self.fold_accuracy),
                "control_accuracy": num(self.control_accuracy), "control_std": num(self.control_std),
                "control_fold_accuracy": list(self.control_fold_accuracy), "selectivity": num(self.selectivity),
                "chance": self.chance, "n_samples": self.n_samples, "n_features": self.n_features,
                "n_classes": self.n_classes, "converged": self.converged, "seconds": self.seconds}


@dataclass(frozen=True)
class ProbingResult:
    """One target's probes over the layers of one epoch.

    Args:
        target: What was probed: ``"label"`` or the name of a concept column.
        probes: ``{layer: LinearProbe}`` in depth order (the order the layers were given in).
        skipped: Layers not probed because the time budget was spent.
        cv: Folds of the cross-validation.
        seed: Seed of the folds, the logistic regression and the control permutation.

    Example:
        >>> ProbingResult("label", {}, ("layer4",), cv=5, seed=0).skipped
        ('layer4',)
    """

    target: str
    probes: Mapping[str, LinearProbe] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    cv: int = 5
    seed: int = 0

    def summary(self) -> dict[str, Any]:
        """Plain values for JSON: every layer's probe, the skipped layers, the folds and seed."""
        return {"target": self.target, "cv": self.cv, "seed": self.seed, "skipped": list(self.skipped),
                "layers": {name: probe.summary() for name, probe in self.probes.items()}}
