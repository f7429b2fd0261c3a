"""Pictures of perturbation faithfulness: mean deletion and insertion curves, attribution vs random map."""

from __future__ import annotations

from collections.abc import Mapping

from matplotlib.figure import Figure
from torch import Tensor

from lightning_xai._checks import expected
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    TITLE_FONTSIZE,
    new_figure,
    wrap_text,
)

__all__ = ["faithfulness_curves"]

_PANELS = (
    ("deletion", "Deletion (lower area = more faithful)", "fraction of pixels removed"),
    ("insertion", "Insertion (higher area = more faithful)", "fraction of pixels inserted"),
)


def faithfulness_curves(fractions: Tensor, curves: Mapping[str, Tensor], title: str | None = None) -> Figure:
    """Two panels, deletion and insertion: the mean target class probability over the probes, for the
    attribution (solid, its samples' spread shaded) and for a random map (dashed), each mean curve's area in
    the legend.

    Args:
        fractions: ``(steps + 1,)`` fractions of the pixels removed (inserted).
        curves: ``"deletion"``, ``"insertion"``, ``"deletion_random"``, ``"insertion_random"``, each
            ``(B, steps + 1)`` target class probabilities.
        title: Figure title.

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas.

    Example:
        >>> import torch
        >>> f = torch.linspace(0, 1, 5)
        >>> curves = {"deletion": 1 - f[None], "insertion": f[None]}
        >>> curves.update(deletion_random=1 - f[None] ** 2, insertion_random=f[None] ** 2)
        >>> fig = faithfulness_curves(f, curves)
        >>> [ax.get_xlabel() for ax in fig.axes]
        ['fraction of pixels removed', 'fraction of pixels inserted']
    """
    if any(f"{kind}{suffix}" not in curves for kind, *_ in _PANELS for suffix in ("", "_random")):
        raise ValueError(
            expected(
                "curves", "a mapping with deletion, insertion and their _random controls", sorted(curves)
            )
        )
    x = fractions.detach().float().cpu().numpy()
    fig = new_figure(9.0, 3.6)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (kind, panel_title, xlabel) in zip(axes, _PANELS):
        for key, label, style in ((kind, "attribution", "-"), (f"{kind}_random", "random map", "--")):
            scores = curves[key].detach().float().cpu()
            mean = scores.mean(0).numpy()
            area = float(((mean[1:] + mean[:-1]) / 2 * (x[1:] - x[:-1])).sum())
            line = ax.plot(x, mean, style, marker="o", markersize=3, label=f"{label} (AUC {area:.3f})")[0]
            if style == "-" and scores.shape[0] > 1:
                ax.fill_between(
                    x,
                    scores.min(0).values.numpy(),
                    scores.max(0).values.numpy(),
                    color=line.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )
        ax.set_title(panel_title, fontsize=TITLE_FONTSIZE)
        ax.set_xlabel(xlabel, fontsize=LABEL_FONTSIZE)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=TICK_FONTSIZE)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=TICK_FONTSIZE, loc="upper right" if kind == "deletion" else "lower right")
    axes[0].set_ylabel("target class probability (mean over probes)", fontsize=LABEL_FONTSIZE)
    if title:
        fig.suptitle(wrap_text(title, 8.8, SUPTITLE_FONTSIZE), fontsize=SUPTITLE_FONTSIZE)
    return fig
