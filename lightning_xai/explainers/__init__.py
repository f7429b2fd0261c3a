"""Explainers: Lightning-free objects with one verb, ``explain(model, inputs, target, scorer) -> Explanation``,
registered by name. Callbacks, drift, the calibration gallery and the CLI all use methods through here, so a method
registered once works everywhere.

Example:
    >>> "gradcam" in list_explainers() and "shap" in list_explainers()
    True
    >>> get_explainer("gradcam++", target_layer="layer4").layer[0]
    'layer4'
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from lightning_xai.explainers._base import Explainer, Explanation, Target
from lightning_xai.explainers.attention import (
    ATTENTION_EXPLAINERS,
    AttentionExplainer,
    AttentionExplanation,
    GradRolloutExplainer,
    RawAttentionExplainer,
    RolloutExplainer,
)
from lightning_xai.explainers.attribution import (
    ATTRIBUTION_EXPLAINERS,
    AttributionExplainer,
    AttributionExplanation,
)
from lightning_xai.explainers.gradcam import CAMExplainer, CAMExplanation
from lightning_xai.explainers.lime import SURROGATE_EXPLAINERS, KernelShapExplainer, LimeExplainer
from lightning_xai.explainers.shap import ShapExplainer, ShapExplanation
from lightning_xai.functional.cam import CAM_METHODS

__all__ = [
    "AttentionExplainer",
    "AttentionExplanation",
    "AttributionExplainer",
    "AttributionExplanation",
    "CAMExplainer",
    "CAMExplanation",
    "Explainer",
    "Explanation",
    "GradRolloutExplainer",
    "KernelShapExplainer",
    "LimeExplainer",
    "RawAttentionExplainer",
    "RolloutExplainer",
    "ShapExplainer",
    "ShapExplanation",
    "Target",
    "explainer_arguments",
    "get_explainer",
    "list_explainers",
    "register_explainer",
    "unregister_explainer",
]

_REGISTRY: dict[str, Callable[..., Explainer]] = {}


def register_explainer(name: str, factory: Callable[..., Explainer], overwrite: bool = False) -> None:
    """Register ``factory`` (an :class:`Explainer` class or a function returning one) under ``name``.

    Example:
        >>> import torch
        >>> class Ones(Explainer):
        ...     name = "ones"
        ...     def explain(self, model, inputs, target="pred", scorer=None):
        ...         x = inputs.args[0].detach().cpu()
        ...         return Explanation(method="ones", values={"input": torch.ones_like(x)}, inputs={"input": x},
        ...                            kinds={"input": "tabular"})
        >>> register_explainer("ones", Ones)
        >>> type(get_explainer("ones")).__name__
        'Ones'
        >>> unregister_explainer("ones")
    """
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"Expected argument `name` to be a non-empty explainer name other than 'auto', but got "
                         f"{name!r}.")
    if not callable(factory):
        raise TypeError(f"Expected argument `factory` to be an Explainer class or a callable returning one, but got "
                        f"{type(factory).__name__}.")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"Expected argument `name` to be a name not registered yet (or pass overwrite=True), but got "
                         f"{name!r}, already registered.")
    _REGISTRY[name] = factory


def unregister_explainer(name: str) -> None:
    """Remove ``name`` from the registry (a third party's, or a test's); unknown names are an error."""
    if name not in _REGISTRY:
        raise ValueError(_unknown(name))
    del _REGISTRY[name]


def list_explainers() -> list[str]:
    """The registered explainer names, sorted.

    Example:
        >>> list_explainers()[:3]
        ['ablationcam', 'attention', 'deeplift']
    """
    return sorted(_REGISTRY)


def get_explainer(name: str, **kwargs: object) -> Explainer:
    """A new explainer registered as ``name``, built with ``kwargs``; an unknown name lists the registered ones.

    Example:
        >>> get_explainer("shap", nsamples=16).nsamples
        16
    """
    if name not in _REGISTRY:
        raise ValueError(_unknown(name))
    explainer = _REGISTRY[name](**kwargs)
    if not isinstance(explainer, Explainer):
        raise TypeError(f"lightning_xai: the explainer registered as {name!r} returned a {type(explainer).__name__}, "
                        "not an Explainer.")
    return explainer


def explainer_arguments(name: str) -> tuple[str, ...]:
    """The keyword arguments the explainer registered as ``name`` takes (``"**"`` when it takes any).

    Example:
        >>> "target_layer" in explainer_arguments("gradcam"), "nsamples" in explainer_arguments("shap")
        (True, True)
    """
    if name not in _REGISTRY:
        raise ValueError(_unknown(name))
    factory = _REGISTRY[name]
    # a class whose __init__ forwards **kwargs to its base takes the base's arguments too
    inits = [k.__init__ for k in factory.__mro__ if "__init__" in vars(k)] if isinstance(factory, type) else [factory]
    names: list[str] = []
    for init in inits:
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return (*names, "**")
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"
                  and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return tuple(names)
    return (*names, "**")


def _unknown(name: object) -> str:
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
    hint = f" (did you mean {close}?)" if close else ""
    return (f"Expected argument `method` to be a registered explainer, one of {list_explainers()}{hint}, but got "
            f"{name!r}.")


def _cam_factory(method: str) -> Callable[..., Explainer]:
    def build(**kwargs: object) -> Explainer:
        return CAMExplainer(method, **kwargs)  # type: ignore[arg-type]

    build.__name__ = build.__qualname__ = f"CAMExplainer[{method}]"
    params = [p for p in inspect.signature(CAMExplainer).parameters.values() if p.name != "method"]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return build


for _method in CAM_METHODS:
    register_explainer(_method, _cam_factory(_method))
register_explainer("shap", ShapExplainer)
for _name, _cls in {**ATTRIBUTION_EXPLAINERS, **SURROGATE_EXPLAINERS, **ATTENTION_EXPLAINERS}.items():
    register_explainer(_name, _cls)
