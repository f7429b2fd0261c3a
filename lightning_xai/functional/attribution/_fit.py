"""The interpretable models of LIME and Kernel SHAP, fitted in torch (float64): captum's defaults,
``sklearn.linear_model.Lasso(alpha)`` and ``LinearRegression`` with sample weights, both with an intercept."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["weighted_lasso", "weighted_least_squares"]


def _centered(x: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted Gram matrix and moment of the centered problem: ``(B, M, M)``, ``(B, M)`` (weights summing to 1,
    as sklearn rescales them)."""
    w = w / w.sum(1, keepdim=True)
    xc = x - (w.unsqueeze(-1) * x).sum(1, keepdim=True)
    yc = y - (w * y).sum(1, keepdim=True)
    wx = w.unsqueeze(-1) * xc
    return wx.transpose(1, 2) @ xc, (wx * yc.unsqueeze(-1)).sum(1)


def weighted_least_squares(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """Coefficients of ``y ~ x`` with an intercept, weights ``w``, per batch row: ``x (B, n, M)``, ``y, w (B, n)``
    -> ``(B, M)``; the minimum-norm solution when ``x`` has too few samples (as ``LinearRegression``'s lstsq).

    Example:
        >>> x = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
        >>> weighted_least_squares(x, (2 * x[..., 0] - x[..., 1] + 3), torch.ones(1, 4)).round(decimals=6).tolist()
        [[2.0, -1.0]]
    """
    x, y, w = x.double(), y.double(), w.double()
    w = w / w.sum(1, keepdim=True)
    xc = x - (w.unsqueeze(-1) * x).sum(1, keepdim=True)
    yc = y - (w * y).sum(1, keepdim=True)
    root = w.sqrt()
    return (torch.linalg.pinv(root.unsqueeze(-1) * xc) @ (root * yc).unsqueeze(-1)).squeeze(-1)


def weighted_lasso(x: Tensor, y: Tensor, w: Tensor, alpha: float, max_iter: int = 5000,
                   tol: float = 1e-10) -> Tensor:
    """``sklearn.linear_model.Lasso(alpha).fit(x, y, sample_weight=w).coef_`` per batch row: minimises
    ``sum_i w_i (y_i - x_i b - c)^2 / (2 sum_i w_i) + alpha |b|_1`` over ``b`` and the intercept ``c``.

    Accelerated proximal gradient (FISTA with restarts) on the weighted Gram matrix, then the exact solution of
    the optimality conditions on the support it found (kept where they hold). ``alpha=0``: least squares.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = (torch.rand(1, 200, 3, generator=g) < 0.5).double()
        >>> y = x @ torch.tensor([1.0, -2.0, 0.001]).double() + 5
        >>> [round(v, 3) for v in weighted_lasso(x, y, torch.ones(1, 200), 0.01)[0].tolist()]
        [0.955, -1.955, 0.0]
    """
    if alpha <= 0:
        return weighted_least_squares(x, y, w)
    gram, moment = _centered(x.double(), y.double(), w.double())
    lipschitz = torch.linalg.eigvalsh(gram)[:, -1].clamp_min(1e-12).unsqueeze(-1)
    b = torch.zeros_like(moment)
    z, t = b.clone(), torch.ones_like(lipschitz)
    for it in range(max_iter):
        step = z - ((gram @ z.unsqueeze(-1)).squeeze(-1) - moment) / lipschitz
        new = step.sign() * (step.abs() - alpha / lipschitz).clamp_min(0)
        t_new = (1 + (1 + 4 * t * t).sqrt()) / 2
        restart = ((z - new) * (new - b)).sum(1, keepdim=True) > 0  # O'Donoghue & Candes' gradient restart
        z = torch.where(restart, new, new + (t - 1) / t_new * (new - b))
        moved = float((new - b).abs().max())
        b, t = new, torch.where(restart, torch.ones_like(t), t_new)
        if it % 25 == 24 or moved <= tol * max(1.0, float(b.abs().max())):
            exact = [_polish(gram[i], moment[i], b[i], alpha) for i in range(b.shape[0])]
            if all(e is not None for e in exact):  # the support is found: the exact solution holds
                return torch.stack(exact)  # type: ignore[arg-type]
            if moved <= tol * max(1.0, float(b.abs().max())):
                break
    return b


def _polish(gram: Tensor, moment: Tensor, b: Tensor, alpha: float) -> Tensor | None:
    """The exact Lasso solution on ``b``'s support and signs, if it satisfies the optimality conditions."""
    active = b.abs() > 1e-12
    exact = torch.zeros_like(b)
    if bool(active.any()):
        sign = b[active].sign()
        sub, info = torch.linalg.solve_ex(gram[active][:, active], moment[active] - alpha * sign)
        if int(info) != 0 or not bool((sub.sign() == sign).all()):
            return None
        exact[active] = sub
    slack = (moment - gram @ exact).abs()
    scale = alpha * (1 + 1e-9) + 1e-12
    return exact if bool((slack[~active] <= scale).all()) and bool(torch.isfinite(exact).all()) else None
