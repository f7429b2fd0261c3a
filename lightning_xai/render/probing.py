"""Probing pictures: probe accuracy by depth (with the control task and chance), and per layer across epochs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lightning_xai._checks import expected
from lightning_xai.render._utils import (
    LABEL_FONTSIZE,
    SUPTITLE_FONTSIZE,
    TICK_FONTSIZE,
    new_figure,
    wrap_text,
)

__all__ = ["accuracy_by_depth", "accuracy_over_epochs", "layer_tick_label"]

_ACCURACY, _CONTROL, _CHANCE = "#3b6ea8", "#8c8c8c", "#d9534f"


def layer_tick_label(name: str, width: int = 22) -> str:
    """A layer name broken into lines of at most ``width`` characters, at its dots where it can be.

    Example:
        >>> print(layer_tick_label("bert.encoder.layer.11.output", 14))
        bert.encoder.
        layer.11.
        output
    """
    lines, current = [], ""
    for part in str(name).replace(".", ".\x00").split("\x00"):
        if current and len(current) + len(part) > width:
            lines.append(current)
            current = ""
        while len(part) > width:  # one piece longer than a line: cut it
            lines.append(part[:width])
            part = part[width:]
        current += part
    if current:
        lines.append(current)
    return "\n".join(lines)


def _values(name: str, values: Sequence[float] | None, count: int) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (count,):
        raise ValueError(expected(name, f"{count} values, one per layer", list(array.ravel())))
    return array


def _ticks(ax: object, layers: Sequence[str]) -> None:
    longest = max((len(n) for n in layers), default=0)
    rotate = len(layers) > 4 or longest > 10
    labels = [layer_tick_label(n) for n in layers]
    ax.set_xticks(range(len(layers)), labels, rotation=35 if rotate else 0,  # type: ignore[attr-defined]
                  ha="right" if rotate else "center", rotation_mode="anchor", fontsize=TICK_FONTSIZE)


def accuracy_by_depth(layers: Sequence[str], accuracy: Sequence[float], accuracy_std: Sequence[float],
                      control: Sequence[float] | None = None, control_std: Sequence[float] | None = None,
                      chance: float | None = None, title: str | None = None) -> Figure:
    """Probe accuracy per layer (layers on x in depth order), with fold standard deviations as error bars, the
    control task beside it and the chance level as a line.

    Args:
        layers: Layer names, shallow to deep (drawn literally, broken at dots when long).
        accuracy: Mean cross-validated accuracy per layer.
        accuracy_std: Its standard deviation over folds.
        control: Control-task accuracy per layer (``None``: not drawn).
        control_std: Its standard deviation.
        chance: The accuracy of always answering the most frequent class.
        title: Figure title.

    Example:
        >>> fig = accuracy_by_depth(["layer1", "layer2"], [0.6, 0.9], [0.05, 0.02], [0.5, 0.52], [0.04, 0.03], 0.5)
        >>> [t.get_text() for t in fig.legends[0].get_texts()]
        ['probe accuracy', 'control task (labels permuted)', 'chance 0.50']
    """
    count = len(layers)
    if count == 0:
        raise ValueError(expected("layers", "at least one layer", list(layers)))
    acc, std = _values("accuracy", accuracy, count), _values("accuracy_std", accuracy_std, count)
    ctl, ctl_std = _values("control", control, count), _values("control_std", control_std, count)
    fig = new_figure(max(5.0, 0.62 * count + 2.2), 4.4)
    ax = fig.add_subplot()
    x = np.arange(count)
    ax.errorbar(x, acc, yerr=std, color=_ACCURACY, marker="o", markersize=5, capsize=4, linewidth=1.6,
                label="probe accuracy")
    if ctl is not None and not np.isnan(ctl).all():
        ax.errorbar(x, ctl, yerr=ctl_std, color=_CONTROL, marker="s", markersize=4, capsize=3, linewidth=1.2,
                    linestyle="--", label="control task (labels permuted)")
    if chance is not None and math.isfinite(chance):
        ax.axhline(chance, color=_CHANCE, linestyle=":", linewidth=1.2, label=f"chance {chance:.2f}")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlim(-0.5, count - 0.5)
    _ticks(ax, layers)
    ax.set_xlabel("layer (shallow → deep)", fontsize=LABEL_FONTSIZE)
    ax.set_ylabel("cross-validated accuracy", fontsize=LABEL_FONTSIZE)
    ax.tick_params(axis="y", labelsize=TICK_FONTSIZE)
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()  # the probe first, chance last; below the axes, never on data
    order = sorted(range(len(labels)), key=lambda i: (labels[i].startswith("chance"), i))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=TICK_FONTSIZE,
               loc="outside lower center", ncols=len(order), frameon=False)
    if title:
        ax.set_title(wrap_text(title, fig.get_figwidth() - 0.4, SUPTITLE_FONTSIZE - 1), fontsize=SUPTITLE_FONTSIZE - 1)
    return fig


def accuracy_over_epochs(series: Mapping[str, Sequence[tuple[int, float]]], chance: float | None = None,
                         title: str | None = None) -> Figure:
    """Probe accuracy of each layer across epochs: when (and how deep) the representation forms.

    Args:
        series: ``{layer: [(epoch, accuracy), ...]}`` in depth order; shallow layers light, deep layers dark.
        chance: The chance level, drawn as a line.
        title: Figure title.

    Example:
        >>> fig = accuracy_over_epochs({"layer1": [(0, 0.5), (1, 0.6)], "layer2": [(0, 0.55), (1, 0.9)]}, 0.5)
        >>> len(fig.axes[0].get_lines())
        3
    """
    if not isinstance(series, Mapping) or not series:
        raise ValueError(expected("series", "a non-empty mapping {layer: [(epoch, accuracy), ...]}", series))
    layers = list(series)
    fig = new_figure(6.4 + (1.6 if max(len(n) for n in layers) > 16 else 0.0), 4.0)
    ax = fig.add_subplot()
    cmap = colormaps["viridis"]
    epochs: set[int] = set()
    for i, layer in enumerate(layers):
        points = sorted(series[layer])
        if not points:
            continue
        xs, ys = zip(*points)
        epochs.update(xs)
        colour = cmap(0.85 * (1 - i / max(len(layers) - 1, 1)))
        ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.5, color=colour, label=layer_tick_label(layer, 28))
    if chance is not None and math.isfinite(chance):
        ax.axhline(chance, color=_CHANCE, linestyle=":", linewidth=1.2, label=f"chance {chance:.2f}")
    ax.set_ylim(0.0, 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(epochs) == 1:
        (only,) = epochs
        ax.set_xlim(only - 1, only + 1)
        ax.set_xticks([only])
    ax.set_xlabel("epoch", fontsize=LABEL_FONTSIZE)
    ax.set_ylabel("cross-validated accuracy", fontsize=LABEL_FONTSIZE)
    ax.tick_params(labelsize=TICK_FONTSIZE)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=TICK_FONTSIZE, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="layer", title_fontsize=TICK_FONTSIZE)
    if title:
        ax.set_title(wrap_text(title, fig.get_figwidth() - 2.0, SUPTITLE_FONTSIZE - 1), fontsize=SUPTITLE_FONTSIZE - 1)
    return fig
