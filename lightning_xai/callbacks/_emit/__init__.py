"""Emitters: typed explanations (and plain settings) to figures, arrays, scalars and JSON in an ArtifactSink.

Rank zero only. An emitter never sees a callback: what it draws comes from the
:class:`~lightning_xai.explainers.Explanation` and the arguments it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

__all__ = ["probe_titles"]


def probe_titles(indices: Sequence[int], labels: Tensor | None, prediction: Tensor | None,
                 confidence: Tensor | None, class_name: Callable[[int], str]) -> list[str]:
    """Tile titles: dataset index, true label, predicted label and confidence.

    Example:
        >>> import torch
        >>> probe_titles([7, -1], torch.tensor([1, 0]), torch.tensor([1, 1]), torch.tensor([0.9, 0.6]), str)
        ['#7 | true: 1 | pred: 1 (0.90)', 'probe 1 | true: 0 | pred: 1 (0.60)']
    """
    titles = []
    for i in range(len(indices)):
        parts = [f"#{indices[i]}" if indices[i] >= 0 else f"probe {i}"]
        if labels is not None and labels.dim() == 1:
            parts.append(f"true: {class_name(int(labels[i]))}")
        if prediction is not None:
            parts.append(f"pred: {class_name(int(prediction[i]))} ({float(confidence[i]):.2f})")  # type: ignore[index]
        titles.append(" | ".join(parts))
    return titles
