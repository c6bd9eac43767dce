"""Curvature L = λ_max(∇²f) by power iteration on Hessian-vector products (THEORY.md §4–5).

L enters DCSGD's contraction factor ``ρ = 1 − ηLω̄/(2N)``, its stability limit
``η < 2N/((N + ω̄)L)`` and the scaling rules (§5). Power iteration ``v ← Hv/‖Hv‖`` converges to
the eigenvalue of largest *magnitude*; its Rayleigh quotient ``vᵀHv`` is returned. If that one
is negative (a saddle with stronger negative curvature), a second run on ``H − λ₋I`` (whose top
eigenvalue is ``λ_max − λ₋ ≥ 0``) recovers the largest algebraic eigenvalue. The stopping rule is
a relative change of the Rayleigh quotient below ``tol``; the residual ``‖Hv − λv‖/|λ|`` is kept
as a quality measure. A Hessian-vector product costs about two backward passes (Pearlmutter).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import check_float, check_int

HVP = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EigenEstimate:
    """Largest algebraic Hessian eigenvalue, the iterations used and the final residual."""

    value: float
    iterations: int
    converged: bool
    residual: float
    largest_magnitude: float


def _power(hvp: HVP, v: Tensor, iters: int, tol: float, shift: float) -> tuple[float, Tensor,
                                                                              int, bool, float]:
    v = v / v.norm()
    lam_prev = math.nan
    lam, residual = 0.0, math.inf
    for it in range(1, iters + 1):
        w = hvp(v).to(v.device, v.dtype)
        if shift:
            w = w - shift * v
        lam = float(v @ w)
        residual = float((w - lam * v).norm()) / max(abs(lam), 1e-300)
        norm = float(w.norm())
        if norm == 0.0 or not math.isfinite(norm):
            return lam, v, it, norm == 0.0, residual
        if abs(lam - lam_prev) <= tol * abs(lam):
            return lam, v, it, True, residual
        lam_prev = lam
        v = w / norm
    return lam, v, iters, False, residual


def top_eigenvalue(hvp: HVP, dim: int, *, generator: torch.Generator | None = None,
                   iters: int = 100, tol: float = 1e-3, dtype: torch.dtype = torch.float32,
                   device: str | torch.device = "cpu") -> EigenEstimate:
    """λ_max of the symmetric operator ``hvp`` on R^dim by power iteration (module docstring).

    The start vector is Gaussian from ``generator``; ``tol`` bounds the relative change of the
    Rayleigh quotient between iterations.
    """
    dim = check_int("dim", dim, minimum=1)
    iters = check_int("iters", iters, minimum=1)
    tol = check_float("tol", tol, low=0.0, low_open=True)
    v0 = torch.randn(dim, generator=generator, dtype=dtype, device=device)
    lam, _, used, ok, res = _power(hvp, v0, iters, tol, 0.0)
    magnitude = lam
    if lam < 0:
        top, _, more, ok, res = _power(hvp, v0, iters, tol, lam)
        lam, used = top + lam, used + more
    return EigenEstimate(value=lam, iterations=used, converged=ok, residual=res,
                         largest_magnitude=magnitude)


def model_hvp(model: nn.Module, loss: Tensor) -> tuple[HVP, int]:
    """``v ↦ ∇²loss · v`` for the trainable parameters of ``model`` (flattened), and their count.

    ``loss`` must be a scalar computed from ``model`` with autograd enabled; its graph is kept
    for all products (Pearlmutter's trick: the gradient of ``∇loss · v``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])

    def hvp(v: Tensor) -> Tensor:
        out = torch.autograd.grad(flat, params, grad_outputs=v.to(flat.device, flat.dtype),
                                  retain_graph=True, allow_unused=True)
        return torch.cat([(o if o is not None else torch.zeros_like(p)).reshape(-1)
                          for o, p in zip(out, params, strict=True)]).detach()

    return hvp, flat.numel()


def function_hvp(grad: Callable[[Tensor], Tensor], x: Tensor) -> HVP:
    """``v ↦ ∇²f(x) v`` from a gradient function (e.g. ``Landscape.grad``) by autograd."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        g = grad(x)

    def hvp(v: Tensor) -> Tensor:
        (out,) = torch.autograd.grad(g, x, grad_outputs=v.to(g.device, g.dtype),
                                     retain_graph=True)
        return out.detach()

    return hvp
