"""Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) as a diagnostic.

Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai._checks import check_positive_int, expected
from lightning_xai.functional.calibration._common import _F64, Task
from lightning_xai.functional.calibration._compute import _calibration_compute
from lightning_xai.functional.calibration._format import _infer_task, _looks_like_probs
from lightning_xai.functional.calibration._input_checks import (
    calibration_check,
    calibration_check_values,
    finite_rows,
)
from lightning_xai.functional.calibration._state import calibration_state
from lightning_xai.functional.calibration._update import _calibration_update_step

__all__ = ["fit_temperature"]


def fit_temperature(logits: Tensor, target: Tensor, max_iter: int = 50, task: Task | None = None) -> float:
    """Temperature scaling (Guo et al., 2017): the ``T > 0`` minimising the NLL of ``logits / T``.

    LBFGS (strong-Wolfe line search) on ``log T`` from ``T = 1``, in float64, on a detached clone of the
    inputs: no model is touched and the caller's tensors keep no graph. It leaves inference mode and enables
    gradients itself, so it can be called from Lightning's validation hooks. Multiclass logits use softmax,
    binary and multilabel logits sigmoid. Rows with NaN or infinities are left out. Divide the logits by the
    returned ``T`` to calibrate them (``T > 1``: the model was over-confident).

    Args:
        logits: ``(N,)`` (binary), ``(N, C)`` (multiclass) or ``(N, L)`` (multilabel) logits.
        target: ``(N,)`` 0/1, ``(N,)`` class indices or ``(N, L)`` 0/1.
        max_iter: Most LBFGS iterations.
        task: The task; None infers it from the shapes: ``(N,)`` binary, ``(N, C)`` with ``(N,)`` targets
            multiclass, ``(N, L)`` with ``(N, L)`` targets multilabel.

    Returns:
        The temperature ``T`` as a Python float.

    Raises:
        TypeError: If ``logits``/``target`` are not tensors of the right kind.
        ValueError: If shapes or values are invalid, or no row is finite.

    Example:
        >>> logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])
        >>> target = torch.tensor([0, 1, 1, 0])  # half wrong at high confidence: T grows
        >>> fit_temperature(logits, target) > 5.0
        True
    """
    check_positive_int("max_iter", max_iter)
    if task is None and isinstance(logits, Tensor) and isinstance(target, Tensor):
        task = "binary" if logits.ndim == 1 else _infer_task(logits, target)  # type: ignore[assignment]
    calibration_check(logits, target, task, "logits")
    calibration_check_values(logits, target, task, "logits")  # type: ignore[arg-type]
    with torch.inference_mode(False), torch.enable_grad():
        dtype = torch.float32 if logits.device.type == "mps" else _F64
        finite = finite_rows(logits)
        z = logits.detach().clone()[finite].to(dtype)
        y = target.detach().clone().to(logits.device)[finite]
        if z.shape[0] == 0:
            raise ValueError(expected("logits", "a tensor with at least one finite row", tuple(logits.shape)))
        y = y.long() if task == "multiclass" else y.to(dtype)
        log_t = torch.zeros((), dtype=dtype, device=z.device, requires_grad=True)

        def loss() -> Tensor:
            scaled = z / log_t.exp()
            if task == "multiclass":
                return F.cross_entropy(scaled, y)
            return F.binary_cross_entropy_with_logits(scaled, y)

        optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            value = loss()
            (log_t.grad,) = torch.autograd.grad(value, log_t)
            return value.detach()

        optimizer.step(closure)
        temperature = float(log_t.detach().exp())
    if not 0.0 < temperature < float("inf"):
        raise ValueError(expected("logits", "logits with a finite optimal temperature", temperature))
    return temperature


def _temperature_ece(logits: Tensor, target: Tensor, task: str, input: str, n_bins: int) -> tuple[float, float] | None:
    """The fitted temperature and the ECE over ``n_bins`` bins after scaling, or None without a finite row.

    Non-finite rows are left out. With ``input="auto"`` predictions that are probabilities are first turned
    into logits (``log p``, or ``logit p`` for binary/multilabel), so they are scaled, not taken for logits.
    """
    finite = torch.isfinite(logits.reshape(logits.shape[0], -1)).all(1)
    logits, target = logits[finite], target[finite]
    if logits.numel() == 0:
        return None
    if input == "auto" and _looks_like_probs(logits, task, None, True) is True:
        tiny = torch.finfo(logits.dtype).tiny
        logits = logits.clamp_min(tiny).log() if task == "multiclass" else torch.logit(logits, eps=1e-7)
    t = fit_temperature(logits, target, task=task)  # type: ignore[arg-type]
    scaled = calibration_state(n_bins)
    _calibration_update_step(scaled, logits / t, target, task, "logits")  # type: ignore[arg-type]
    return t, float(_calibration_compute(scaled)["ece"])
