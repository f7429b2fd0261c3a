"""The explainer contract: one verb, ``explain(model, inputs, target, scorer) -> Explanation``, and typed results.

Lightning-free. An :class:`Explanation` carries everything an emitter or renderer needs (values per input, the
inputs themselves, their kinds and layouts, token strings, prediction, target, what produced it), so nothing ever
calls back into the callback that asked for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn

from lightning_xai._inputs import Scorer
from lightning_xai.adapters import ModelInputs, resolve_targets

__all__ = ["Explainer", "Explanation", "Target"]

#: What to explain: ``"pred"``, ``"label"``, a class index, a ``(batch,)`` tensor of classes, or a callable mapping
#: the raw model output to one score per sample.
Target = Union[str, int, Tensor, Callable[[Any], Tensor]]


@dataclass(frozen=True, kw_only=True)
class Explanation:
    """One explanation of a batch: attribution values per explained input and what the figures need to draw them.

    Attributes:
        method: the registered name of the explainer that made it (``"gradcam"``, ``"shap"``, ...).
        values: attribution per explained input name (CPU, float32): the input's own shape (SHAP), or one value
            per position of a feature map upsampled to the input (Grad-CAM: ``(B, H, W)``, ``(B, T, H, W)``).
        inputs: every model input by name (CPU), explained or not (an ``attention_mask`` rides along).
        kinds: ``image``, ``video``, ``spectrogram``, ``tokens`` or ``tabular`` per input name.
        signed: values have a sign (for/against the target) rather than being a non-negative heat.
        target: the explained class per sample (``None`` for a callable target scoring the raw output).
        prediction: the predicted class per sample (``None`` when the output is not ``(batch, classes)``).
        confidence: the softmax probability of the prediction.
        base_values: the expected output over the baseline, where the method defines one (SHAP).
        layouts: ``BTCHW``/``BCTHW`` per clip input.
        time_first: names of 3-D spectrogram inputs laid out ``(B, frames, mel)``.
        tokens: token strings per token input (``#<id>`` without a tokenizer); ``keep``: which to show.
        settings: what produced it (layer, reshape, engine, ...), recorded in every artifact.

    Example:
        >>> import torch
        >>> e = Explanation(method="toy", values={"input": torch.ones(2, 3, 4, 4)},
        ...                 inputs={"input": torch.zeros(2, 3, 4, 4)}, kinds={"input": "image"})
        >>> e.maps()["input"].shape
        torch.Size([2, 4, 4])
    """

    method: str
    values: dict[str, Tensor]
    inputs: dict[str, Tensor]
    kinds: dict[str, str]
    signed: bool = True
    target: Tensor | None = None
    prediction: Tensor | None = None
    confidence: Tensor | None = None
    base_values: Tensor | None = None
    layouts: dict[str, str] = field(default_factory=dict)
    time_first: tuple[str, ...] = ()
    tokens: dict[str, list[list[str]]] = field(default_factory=dict)
    keep: dict[str, Tensor] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    #: the fields that hold one entry per sample (joined by rows when a batch is explained in parts)
    row_fields: ClassVar[tuple[str, ...]] = ("values", "inputs", "target", "prediction", "confidence",
                                             "base_values", "tokens", "keep")

    def maps(self) -> dict[str, Tensor]:
        """One value per position the figures show, per explained input: images (and 4-D spectrograms) summed over
        channels, clips over
        channels and frames (values of the input's shape) or averaged over frames (per-frame heatmaps); tokens,
        spectrograms and tabular rows as they are. Drift compares these."""
        out = {}
        for name, v in self.values.items():
            x, kind = self.inputs.get(name), self.kinds.get(name)
            same = x is not None and tuple(v.shape) == tuple(x.shape)
            if kind in ("image", "spectrogram") and same and v.dim() == 4:  # (B, C, H, W), (B, 1, mel, frames)
                v = v.sum(1)
            elif kind == "video":
                v = v.flatten(1, 2).sum(1) if same else (v.mean(1) if v.dim() == 4 else v)
            out[name] = v
        return out

    def drift_arrays(self) -> dict[str, Tensor]:
        """The arrays a drift snapshot stores and compares, by name: :meth:`maps` per input (an explainer of one
        chosen input keys its map by method instead, as Grad-CAM does)."""
        return self.maps()


class Explainer(ABC):
    """Base class of every explainer: ``explain(model, inputs, target, scorer)`` returns an :class:`Explanation`.

    Subclasses set ``name`` (their registry name) and implement :meth:`explain`; they keep their settings as public
    attributes. Explainers that need baselines drawn from the data set ``n_background`` > 0 and read
    ``background`` (a :class:`~lightning_xai.adapters.ModelInputs` batch set by whoever draws it, e.g. a callback).
    ``explain`` runs on any model in any mode: the caller puts it in ``explanation_mode``.

    Example:
        >>> import torch
        >>> class InputTimesOne(Explainer):
        ...     name = "input_times_one"
        ...     def explain(self, model, inputs, target="pred", scorer=None):
        ...         x = inputs.args[0]
        ...         return Explanation(method=self.name, values={"input": x.detach().cpu()},
        ...                            inputs={"input": x.detach().cpu()}, kinds={"input": "tabular"})
        >>> InputTimesOne().explain(nn.Linear(2, 2), ModelInputs((torch.ones(1, 2),))).values["input"].tolist()
        [[1.0, 1.0]]
    """

    name: ClassVar[str] = "explainer"
    #: the explanation of a sample does not depend on the other samples of the batch (no shared random stream, no
    #: batch-wide normalisation): a distributed callback may explain the probe in parts, one per rank
    splittable: bool = False
    #: the kinds of input it explains (``image``, ``video``, ``spectrogram``, ``tokens``, ``tabular``)
    kinds: ClassVar[tuple[str, ...]] = ("image", "video", "spectrogram", "tokens", "tabular")
    #: draws random numbers (from its own generator, seeded by ``seed``): its stability across seeds is measured
    stochastic: bool = False
    #: how many background samples the explainer wants drawn from the data (0: none)
    n_background: int = 0
    #: may explain a deep copy of the model in a thread while the model trains (callbacks/_overlap.py): it holds
    #: no module of the model between calls and never draws from the global random streams
    overlappable: bool = False
    background: ModelInputs | None = None

    @abstractmethod
    def explain(self, model: nn.Module, inputs: ModelInputs, target: Target = "pred",
                scorer: Scorer | None = None) -> Explanation:
        """Explain ``inputs`` (on the model's device) for ``target``; ``scorer`` reads the model's scores."""

    def splits_on(self, device: torch.device) -> bool:
        """May a batch on ``device`` be explained in parts (see ``splittable``)? Explainers whose engine batches
        differently per device say so here."""
        return self.splittable

    def settings(self) -> dict[str, Any]:
        """What this explainer is set to (recorded with every artifact and snapshot)."""
        return {"method": self.name}


def targets_of(logits: Tensor, target: Target, inputs: ModelInputs) -> Tensor | Callable[[Any], Tensor]:
    """The class per sample to explain (a callable target is returned as is: it scores the raw output).

    Example:
        >>> import torch
        >>> targets_of(torch.tensor([[0.0, 2.0], [3.0, 1.0]]), "pred", ModelInputs((torch.zeros(2, 1),))).tolist()
        [1, 0]
    """
    if callable(target) and not isinstance(target, Tensor):
        return target
    if isinstance(target, Tensor):
        return target.to(logits.device).reshape(-1)
    return resolve_targets(logits, target, inputs.labels)  # type: ignore[arg-type]
