"""Special functions in torch for the Student-t law (THEORY.md §3), on any device and dtype.

The t CDF goes through the regularised incomplete beta function ``I_x(a, b)``: for
``T ~ t_ν`` and ``x = ν/(ν + y²)``, ``P(|T| > |y|) = I_x(ν/2, ½)``, so
``2F_ν(y) − 1 = sign(y)(1 − I_x(ν/2, ½))``. ``I_x`` is evaluated by its continued fraction
(modified Lentz, Numerical Recipes §6.4) on the side where it converges fast, ``I_x(a, b)`` or
``1 − I_{1−x}(b, a)``. Both ``x`` and ``1 − x`` are formed without cancellation, which keeps the
error below ~1e-13 absolute in float64 for ν in [0.05, 200] (tests compare with scipy).
Half-precision inputs are evaluated in float32.
"""

from __future__ import annotations

import math

import torch
from scipy.special import betaln
from torch import Tensor

_CHECK_EVERY = 4     # convergence test (one host sync) every few Lentz steps
_MAX_STEPS = 1000    # far above the ~60 steps that ν = 1e4 needs


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _as_float(y: Tensor) -> Tensor:
    return y if y.is_floating_point() else y.to(torch.float64)


def _lentz(a: float, b: float, x: Tensor) -> Tensor:
    """Continued fraction of ``I_x(a, b)`` (without the prefactor), for ``x < (a+1)/(a+b+2)``."""
    if x.numel() == 0:
        return x.clone()
    info = torch.finfo(x.dtype)
    tiny, eps = info.tiny, 4.0 * info.eps   # adding tiny keeps a denominator off exact zero
    c = torch.ones_like(x)
    d = (x * (-(a + b) / (a + 1.0))).add_(1.0 + tiny).reciprocal_()
    h = d.clone()
    for m in range(1, _MAX_STEPS + 1):
        m2 = 2 * m
        for coef in (m * (b - m) / ((a - 1.0 + m2) * (a + m2)),
                     -(a + m) * (a + b + m) / ((a + m2) * (a + 1.0 + m2))):
            aa = x * coef
            d = torch.mul(aa, d, out=d).add_(1.0).add_(tiny).reciprocal_()
            c = aa.div_(c).add_(1.0).add_(tiny)
            delta = d * c
            h.mul_(delta)
        if m % _CHECK_EVERY == 0 and float((delta - 1.0).abs_().nan_to_num_(0.0).max()) <= eps:
            break
    return h


def betainc_pair(a: float, b: float, x: Tensor, xc: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(I_x(a, b), 1 − I_x(a, b))`` for ``x`` in [0, 1] with ``xc = 1 − x`` given exactly.

    Whichever of the two is evaluated directly is accurate to a few ulps relative; the other one
    is its complement. ``a, b > 0`` are Python floats, ``x``/``xc`` same-shape tensors.
    """
    lbeta = float(betaln(a, b))
    direct = x < (a + 1.0) / (a + b + 2.0)
    front = torch.exp(a * torch.log(x) + b * torch.log(xc) - lbeta)
    if bool(direct.all()):
        value = front * _lentz(a, b, x) / a
        return value, 1.0 - value
    rev = ~direct
    out_direct = torch.empty_like(x)
    out_rev = torch.empty_like(x)
    if bool(direct.any()):
        out_direct[direct] = front[direct] * _lentz(a, b, x[direct]) / a
    out_rev[rev] = front[rev] * _lentz(b, a, xc[rev]) / b   # = 1 − I_x(a, b)
    value = torch.where(direct, out_direct, 1.0 - out_rev)
    complement = torch.where(direct, 1.0 - out_direct, out_rev)
    return value, complement


def t_tail_center(y: Tensor, nu: float) -> tuple[Tensor, Tensor]:
    """``(P(|T| > |y|), P(|T| < |y|))`` for ``T ~ t_ν``; the smaller one is relatively accurate."""
    t2 = y * y
    x = nu / (nu + t2)                   # 1 at y = 0, 0 at |y| = inf
    xc = 1.0 / (1.0 + nu / t2)           # = t2/(nu + t2), also at t2 = 0 or inf
    return betainc_pair(0.5 * nu, 0.5, x, xc)


def t_sign_mean(y: Tensor, nu: float) -> Tensor:
    """``2F_ν(y) − 1 = E[sign(y + T)]`` for ``T ~ t_ν`` (THEORY.md §3).

    Closed forms: ν = 1: ``(2/π) arctan y``; ν = 2: ``y/√(2 + y²)``;
    ν = 3: ``(2/π)[(y/√3)/(1 + y²/3) + arctan(y/√3)]``; else ``sign(y) I_{y²/(ν+y²)}(½, ν/2)``.
    """
    y = _as_float(y)
    dtype = y.dtype
    y = y.to(_work_dtype(dtype))
    if nu == 1.0:
        out = torch.atan(y).mul_(2.0 / math.pi)
    elif nu == 2.0:
        big = y.abs() > 1.0
        safe = torch.where(big, y, torch.ones_like(y))
        out = torch.where(big, torch.sign(y) * torch.rsqrt(1.0 + 2.0 / (safe * safe)),
                          y * torch.rsqrt(2.0 + y * y))
    elif nu == 3.0:
        u = y / math.sqrt(3.0)
        big = u.abs() > 1.0
        safe = torch.where(big, u, torch.ones_like(u))
        ratio = torch.where(big, 1.0 / (safe + 1.0 / safe), u / (1.0 + u * u))  # u/(1 + u²)
        out = (ratio + torch.atan(u)).mul_(2.0 / math.pi)
    else:
        _, center = t_tail_center(y, nu)
        out = torch.sign(y) * center
    return out.to(dtype)


def t_cdf(y: Tensor, nu: float) -> Tensor:
    """Student-t CDF ``F_ν(y)``; both tails relatively accurate (ν = 1: ``atan2(1, −y)/π``)."""
    y = _as_float(y)
    dtype = y.dtype
    y = y.to(_work_dtype(dtype))
    if nu == 1.0:
        out = torch.atan2(torch.ones_like(y), -y).div_(math.pi)
    else:
        tail, _ = t_tail_center(y, nu)
        half = 0.5 * tail
        out = torch.where(y < 0, half, 1.0 - half)
    return out.to(dtype)


def t_density_at_zero(nu: float) -> float:
    """``f_ν(0) = Γ((ν+1)/2) / (√(πν) Γ(ν/2)) = 1/(√ν B(ν/2, ½))``."""
    return math.exp(-float(betaln(0.5 * nu, 0.5)) - 0.5 * math.log(nu))
