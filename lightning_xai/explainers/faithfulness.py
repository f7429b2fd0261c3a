"""The faithfulness check any explainer's image maps can get (``faithfulness=True`` on GradCAMCallback, SHAPCallback).

Every explained image map is scored by deletion and insertion (:mod:`lightning_xai.functional.faithfulness`)
against the target the map explains, next to a control: the same curves for a uniform random map drawn from
the check's own ``torch.Generator``, re-seeded at every explanation (the global RNG is never used; every rank
draws the same map, so DDP numbers match). :meth:`FaithfulnessCheck.measure` runs where the explanation runs (all
ranks, inside ``explanation_mode``); ``log_faithfulness`` (``lightning_xai.callbacks._emit.faithfulness``) where it
is emitted (rank zero). Lightning-free: rows
are scored through a :class:`~lightning_xai._inputs.Scorer`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._checks import check_choice, check_positive_int, expected
from lightning_xai._inputs import Scorer, input_kind
from lightning_xai.adapters import ModelInputs
from lightning_xai.functional.faithfulness import deletion_curve, insertion_curve

__all__ = ["BASELINES", "METRICS", "FaithfulnessCheck", "expand_sample"]

BASELINES = ("blur", "mean", "zero")
METRICS = ("deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random")

# forward(model, rows, sample) -> (rows, classes) logits; ``sample`` is None when the rows may mix samples
# (the map's input is the model's only batched input), else the probe index every row belongs to.
RowsForward = Callable[[nn.Module, Tensor, "int | None"], Tensor]


class FaithfulnessCheck:
    """Deletion / insertion AUCs of explained maps and of a seeded random control.

    Args:
        steps: ``steps`` of the curves (``steps + 1`` points each).
        baseline: what replaces a removed pixel: ``"blur"``, ``"mean"`` or ``"zero"``.
        seed: seed of the generator of the random control.
        max_batch: most rows per forward.
        warn: how to say that an input is skipped (a callback passes ``rank_zero_warn``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> check = FaithfulnessCheck(steps=4, baseline="zero", seed=0)
        >>> x = torch.rand(2, 1, 6, 6)
        >>> out = check.measure(net, x, {"map": x[:, 0]}, torch.tensor([0, 1]), lambda m, r, i: m(r), False)
        >>> out["map"]["deletion_auc"].shape, out["map"]["fractions"].shape
        (torch.Size([2]), torch.Size([5]))
    """

    def __init__(self, steps: int, baseline: str, seed: int, max_batch: int = 64,
                 warn: Callable[..., Any] = warnings.warn) -> None:
        self.steps, self.baseline, self.seed, self.max_batch = steps, baseline, seed, max_batch
        self._warn = warn
        self._warned: set[str] = set()

    @classmethod
    def from_args(cls, faithfulness: Any, steps: Any, baseline: Any, seed: int = 0, max_batch: int = 64,
                  warn: Callable[..., Any] = warnings.warn) -> FaithfulnessCheck | None:
        """Check the ``faithfulness``, ``faithfulness_steps`` and ``faithfulness_baseline`` arguments; the check
        when on, else ``None``.

        Example:
            >>> FaithfulnessCheck.from_args(True, 10, "zero").steps, FaithfulnessCheck.from_args(False, 10, "zero")
            (10, None)
        """
        if not isinstance(faithfulness, bool):
            raise TypeError(expected("faithfulness", "True or False", faithfulness))
        check_positive_int("faithfulness_steps", steps)
        check_choice("faithfulness_baseline", baseline, BASELINES)
        return cls(steps, baseline, seed, max_batch, warn) if faithfulness else None

    def skip(self, what: str, why: str = "it needs class targets of 4-D images") -> None:
        """Warn once per kind of input that is not measured."""
        if what not in self._warned:
            self._warned.add(what)
            self._warn(
                f"lightning_xai: faithfulness=True measures image maps only; {what} is skipped ({why}).",
                category=UserWarning,
            )

    def measure_inputs(
        self, scorer: Scorer, model: nn.Module, inputs: ModelInputs, names: Sequence[str], shap: Any, target: Any
    ) -> dict[str, dict[str, Tensor]]:
        """:meth:`measure_input` of every explained 4-D image input of a SHAP result (``shap.values`` and
        ``shap.explained`` in the order of ``names``: the inputs' positions, then keywords); token ids are
        left out, other kinds skipped with a warning."""
        out: dict[str, dict[str, Tensor]] = {}
        for j, key in enumerate([*range(len(inputs.args)), *inputs.kwargs]):
            kind = input_kind(names[j], inputs.get(key))
            if not shap.explained[j] or kind == "tokens":
                continue
            if kind != "image" or callable(target):
                self.skip(f"{kind} input {names[j]!r}" if kind != "image" else "a callable target")
                continue
            out.update(self.measure_input(scorer, model, inputs, key, {names[j]: shap.values[j]}, target))
        return out

    def measure_input(
        self,
        scorer: Scorer,
        model: nn.Module,
        inputs: ModelInputs,
        key: int | str,
        maps: dict[str, Tensor],
        target: Tensor,
    ) -> dict[str, dict[str, Tensor]]:
        """:meth:`measure` of the maps of input ``key``, the rows' logits through ``scorer`` (the model's
        ``forward_fn`` and ``output``); the other inputs of a sample go with its perturbed rows."""
        n = inputs.batch_size

        def rows(m: nn.Module, image: Tensor, i: int | None) -> Tensor:
            def one(t: Any) -> Any:
                return expand_sample(t, i, image.shape[0], n)

            mi = ModelInputs(
                tuple(one(a) for a in inputs.args),
                {k: one(v) for k, v in inputs.kwargs.items()},
                one(inputs.labels),
                one(inputs.mask),
            )
            return scorer.logits(scorer(m, mi.replace(key, image)))

        per_sample = len(inputs.args) + len(inputs.kwargs) > 1
        return self.measure(model, inputs.get(key), maps, target, rows, per_sample)

    def measure(
        self,
        model: nn.Module,
        x: Tensor,
        maps: dict[str, Tensor],
        target: Tensor,
        forward: RowsForward,
        per_sample: bool,
    ) -> dict[str, dict[str, Tensor]]:
        """Curves and AUCs, on CPU, of each ``(B, H, W)`` or ``(B, C, H, W)`` map of the 4-D image ``x``.

        Returns ``{name: {"fractions", "deletion", "insertion", "deletion_random", "insertion_random", and the
        four METRICS}}``; the random control is drawn once per map shape and shared by maps of that shape.
        """
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        controls: dict[tuple[int, ...], dict[str, Tensor]] = {}
        out: dict[str, dict[str, Tensor]] = {}
        for name, attribution in maps.items():
            clean = torch.nan_to_num(attribution.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
            shape = tuple(clean.shape)
            if shape not in controls:
                controls[shape] = self._curves(
                    model, x, torch.rand(shape, generator=gen), target, forward, per_sample
                )
            res = {
                **self._curves(model, x, clean, target, forward, per_sample),
                **{f"{k}_random": v for k, v in controls[shape].items() if k != "fractions"},
            }
            for kind in ("deletion", "insertion"):
                res[f"{kind}_auc"] = torch.trapezoid(res[kind], res["fractions"], dim=-1)
                res[f"{kind}_auc_random"] = torch.trapezoid(res[f"{kind}_random"], res["fractions"], dim=-1)
            out[name] = res
        return out

    def _curves(
        self, model: nn.Module, x: Tensor, att: Tensor, target: Tensor, forward: RowsForward, per_sample: bool
    ) -> dict[str, Tensor]:
        kw: dict[str, Any] = {"steps": self.steps, "baseline": self.baseline, "max_batch": self.max_batch}
        parts = [(None, slice(None))] if not per_sample else [(i, slice(i, i + 1)) for i in range(x.shape[0])]
        res: dict[str, Any] = {"deletion": [], "insertion": []}
        for i, rows in parts:
            fwd = lambda m, r, i=i: forward(m, r, i)
            for kind, curve in (("deletion", deletion_curve), ("insertion", insertion_curve)):
                fractions, scores = curve(model, x[rows], att[rows], target[rows], forward_fn=fwd, **kw)
                res[kind].append(scores.float().cpu())
        return {
            "fractions": fractions.float().cpu(),
            "deletion": torch.cat(res["deletion"]),
            "insertion": torch.cat(res["insertion"]),
        }


def expand_sample(t: Any, sample: int | None, rows: int, batch: int) -> Any:
    """Sample ``sample`` of a batched tensor, repeated ``rows`` times (anything else, or ``None``: as is)."""
    if sample is None or not isinstance(t, Tensor) or t.dim() == 0 or t.shape[0] != batch:
        return t
    return t[sample : sample + 1].expand(rows, *t.shape[1:])
