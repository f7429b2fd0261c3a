"""Which layers of a model ``shap.DeepExplainer`` (PyTorch) cannot handle, found by tracing one forward pass.

shap's DeepLIFT rules (``shap/explainers/_deep/deep_pytorch.py``, its ``op_handler`` table) attach to *leaf*
modules by class name: linear ones (``Linear``, ``Conv*``, ``BatchNorm*``, ``AvgPool*``, ...) keep the plain
gradient, which is exact for them; elementwise nonlinear ones (``ReLU``, ``Tanh``, ``GELU``, ...) and max
pools get the rescale rule. Everything else is silently differentiated: a leaf shap does not know (a
``LayerNorm``, a custom activation), and any operation a module performs in its own ``forward`` between its
children (``torch.relu(...)``, ``q @ k.transpose(-1, -2)``, ``softmax``). Where such an operation is
nonlinear, the attributions no longer add up to ``f(x) - E f(background)``. A nonlinear leaf called more
than once per forward pass breaks too: shap keeps only the input of its last call for the rescale rule.

:func:`unsupported_layers` runs one forward pass of two rows under a ``TorchFunctionMode``, with the module
stack tracked by hooks. With the parameters frozen, a tensor that requires grad is an activation (and so is
anything computed from one without grad, such as ``x > 0``). Each torch operation on activations, outside
the leaves shap handles, is classified as linear (reshapes, sums, additions, products with constants, ...)
or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__: list[str] = []

_LINEAR = frozenset(  # linear in their tensor arguments (eval mode: dropout is the identity)
    "view reshape flatten unflatten squeeze unsqueeze permute transpose t contiguous expand expand_as "
    "broadcast_to repeat tile narrow select getitem setitem split split_with_sizes tensor_split chunk unbind "
    "cat concat concatenate stack hstack vstack dstack movedim moveaxis swapaxes swapdims roll flip fliplr "
    "flipud rot90 index_select gather take take_along_dim pad clone to float double half bfloat16 type "
    "type_as view_as reshape_as get copy scatter scatter_add index_add index_copy index_put diagonal diag "
    "diag_embed tril triu unfold fold pixel_shuffle pixel_unshuffle channel_shuffle cpu cuda requires_grad "
    "retain_grad zero fill add sub rsub neg pos positive sum mean nansum cumsum diff trace avg_pool1d "
    "avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d dropout dropout1d "
    "dropout2d dropout3d alpha_dropout feature_alpha_dropout identity batch_norm interpolate upsample "
    "embedding".split()
)
_PRODUCTS = frozenset(  # linear in each argument: nonlinear only with two activations
    "mul multiply matmul mm bmm mv dot vdot inner outer ger kron einsum tensordot linear bilinear conv1d "
    "conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d multi_dot chain_matmul".split()
)
_ADD_PRODUCTS = frozenset("addmm addbmm baddbmm addmv addr addcmul".split())  # input + a * b
_DIVISIONS = frozenset("div divide truediv true_divide".split())
_SELECTIONS = frozenset("where masked_fill masked_select masked_scatter".split())
_ALIASES = {"attention": "attention (products of activations, softmax)"}
_RENAME = dict(  # in-place and reflected forms; fused attention kernels
    pair.split(":")
    for pair in (
        "iadd:add radd:add isub:sub imul:mul rmul:mul rmatmul:matmul imatmul:matmul itruediv:truediv "
        "idiv:div multi_head_attention_forward:attention scaled_dot_product_attention:attention"
    ).split()
)
_MAX_LISTED = 12


def _op_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", type(func).__name__).strip("_")
    return _RENAME.get(name, name)


def _reason(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], active: Callable[[Any], bool]
) -> str | None:
    """Why an operation on activations is not linear in them (``None`` if it is)."""
    flat = tree_flatten((args, kwargs))[0]
    if name in _LINEAR:
        return None
    if name in _PRODUCTS or name in _ADD_PRODUCTS:
        factors = tree_flatten((args[1:] if name in _ADD_PRODUCTS else args, kwargs))[0]
        return f"{name} of two activations" if sum(map(active, factors)) >= 2 else None
    if name in _DIVISIONS:
        divisor = args[1] if len(args) > 1 else kwargs.get("other")
        return "division by an activation" if active(divisor) else None
    if name in ("rtruediv", "rdiv"):
        return "division by an activation"
    if name in _SELECTIONS:
        conditions = [t for t in flat if isinstance(t, Tensor) and active(t) and not t.requires_grad]
        return f"{name} on a condition computed from activations" if conditions else None
    return _ALIASES.get(name, name)


class _Tracer(TorchFunctionMode):
    """Record, per innermost module, the nonlinear operations performed on activations."""

    def __init__(self, skip: set[int]) -> None:
        super().__init__()
        self.stack: list[nn.Module] = []
        self.skip = skip  # ids of modules whose operations shap handles (or that are the explained input)
        self.derived: dict[int, Tensor] = {}  # activation-dependent tensors without grad (x > 0, x.detach())
        self.found: dict[int, tuple[nn.Module, list[str]]] = {}

    def active(self, t: Any) -> bool:
        return isinstance(t, Tensor) and (t.requires_grad or id(t) in self.derived)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not any(self.active(t) for t in tree_flatten((args, kwargs))[0]):
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        for t in outs:
            if not t.requires_grad:
                self.derived[id(t)] = t
        module = self.stack[-1] if self.stack else None
        if module is None or id(module) in self.skip or not any(t.requires_grad for t in outs):
            return out
        reason = _reason(_op_name(func), tuple(args), kwargs, self.active)
        if reason is not None:
            reasons = self.found.setdefault(id(module), (module, []))[1]
            if reason not in reasons:
                reasons.append(reason)
        return out


def _shap_rules() -> dict[str, str]:
    from shap.explainers._deep import deep_pytorch

    return {name: handler.__name__ for name, handler in deep_pytorch.op_handler.items()}


@contextlib.contextmanager
def _module_stack(root: nn.Module, tracer: _Tracer, calls: dict[int, int]) -> Iterator[None]:
    def push(module: nn.Module, args: Any) -> None:
        tracer.stack.append(module)
        calls[id(module)] = calls.get(id(module), 0) + 1

    def pop(module: nn.Module, args: Any, output: Any) -> None:
        if tracer.stack and tracer.stack[-1] is module:
            tracer.stack.pop()

    handles = []
    try:
        for module in root.modules():
            handles.append(module.register_forward_pre_hook(push))
            handles.append(module.register_forward_hook(pop))
        yield
    finally:
        for handle in handles:
            handle.remove()


def unsupported_layers(
    wrapper: nn.Module,
    model: nn.Module,
    run: Callable[[], Any],
    explained_layer: nn.Module | None,
    rules: dict[str, str] | None = None,
    who: str = "shap",
) -> list[str]:
    """``"name (Type: reasons)"`` for every layer shap's DeepExplainer cannot handle, in module order.

    ``wrapper`` contains ``model`` and is what shap sees; ``run()`` performs one forward pass of ``wrapper``
    on inputs that require grad, with the model's parameters frozen. Operations in ``wrapper`` itself,
    outside ``model``, are those of ``forward_fn`` and ``target``. ``rules`` maps the leaf classes another
    DeepLIFT implementation handles (captum's) to ``"linear"``, ``"nonlinear_1d"`` or ``"maxpool"`` (default:
    shap's table); ``who`` names it in the reasons.
    """
    rules = _shap_rules() if rules is None else rules
    names = {id(m): name for name, m in model.named_modules()}
    skip = {id(m) for m in wrapper.modules() if not list(m.children()) and type(m).__name__ in rules}
    if explained_layer is not None:
        skip.add(id(explained_layer))
    tracer, calls = _Tracer(skip), dict[int, int]()
    with _module_stack(wrapper, tracer, calls), tracer:
        run()
    found = dict(tracer.found)
    for module in wrapper.modules():
        kind = rules.get(type(module).__name__)
        if kind in ("nonlinear_1d", "maxpool") and calls.get(id(module), 0) > 1:
            reason = f"called {calls[id(module)]} times in one forward pass, {who} keeps the last call's input"
            found.setdefault(id(module), (module, []))[1].append(reason)
    order = {id(m): i for i, m in enumerate(wrapper.modules())}
    listing = []
    for key in sorted(found, key=lambda k: order.get(k, -1)):
        module, reasons = found[key]
        name = names.get(key)
        if name is None:  # the wrapper itself: what forward_fn and target do with the model's output
            listing.append(f"forward_fn/target ({', '.join(reasons)})")
        else:
            listing.append(f"{name or '(the model)'} ({type(module).__name__}: {', '.join(reasons)})")
    return listing


def describe(listing: list[str]) -> str:
    """The listing, shortened to its first entries."""
    shown = ", ".join(listing[:_MAX_LISTED])
    more = len(listing) - _MAX_LISTED
    return shown + (f", and {more} more" if more > 0 else "")
