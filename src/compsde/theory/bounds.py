"""Upper bounds on E f − f* over time for μ-PL, L-smooth f (THEORY.md §4) and DSignSGD's phases.

PL bounds (``e = E f − f*``, ``V = mean_i tr Σ_i``, ``U = mean_i (1+ω_i) tr Σ_i``, batch inside Σ):

- SDE: DSGD ``ė ≤ −2μe + ηLV/(2N)``; DCSGD ``ė ≤ −2μρe + ηLU/(2N)``, ``ρ = 1 − ηLω̄/(2N)``;
  DSignSGD (Phase 3) ``ė ≤ −2μ(c₃/σ_H)e + ηLd/(2N)``.
- Discrete (what the algorithm obeys, by L-smoothness): DSGD
  ``e' ≤ (1 − 2μη(1 − Lη/2))e + Lη²V/(2N)``; DCSGD ``ρ_d = 1 − (Lη/2)(1 + ω̄/N)`` in place of
  ``1 − Lη/2`` and U for V; DSignSGD ``e' ≤ (1 − 2μη(c₃/σ_H − Lηℓ²/(2σ_H²)))e + Lη²d/(2N)``.

``c₃ = φ(√2)/√2`` is the chord of the sign mean φ on Phase 3 (``erf(1)/√2 ≈ 0.596`` Gaussian), a
true lower bound there; THEORY's ℓ (the tangent) gives the Phase-3 *prediction*, not a bound.
:func:`dsignsgd_phase_bound` chains the three phases on a diagonal quadratic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._checks import check_choice
from ._laws import Y_PHASE1, Y_PHASE3, chord_slopes, ell, sign_mean_lower
from .curves import KINDS, _steps
from .model import QuadraticModel


@dataclass
class BoundResult:
    """Bound on E f − f* at ``steps``; ``rate`` (per unit of t) and ``level`` of the closed form."""

    steps: np.ndarray
    time: np.ndarray
    bound: np.ndarray
    kind: str
    rate: float
    level: float


def _affine(delta0: float, factor: float, constant: float, steps: np.ndarray, lr: float,
            kind: str) -> tuple[np.ndarray, float, float]:
    """Solve e' = factor·e + constant (discrete) or ė = −factor·e + constant (SDE) from delta0."""
    if kind == "discrete":
        if not 0 <= factor < 1:
            return np.full(steps.size, math.inf), 0.0, math.inf
        level = constant / (1 - factor)
        power = factor ** steps.astype(float)
        return power * delta0 + (1 - power) * level, -math.log(factor) / lr, level
    if factor <= 0:
        return np.full(steps.size, math.inf), 0.0, math.inf
    level = constant / factor
    decay = np.exp(-factor * steps * lr)
    return decay * delta0 + (1 - decay) * level, factor, level


def pl_bound(method: str, steps: int | np.ndarray, *, lr: float, delta0: float, mu: float,
             L: float, agents: int, noise_trace: float = 0.0, compressed_trace: float = 0.0,
             omega: float = 0.0, dim: int = 1, scale_harmonic: float = 1.0,
             scale_harmonic_min: float | None = None, nu: float | None = None,
             kind: str = "discrete") -> BoundResult:
    """PL bound on ``E f − f*`` (module docstring) for any μ-PL, L-smooth objective.

    ``noise_trace`` = V (DSGD), ``compressed_trace`` = U and ``omega`` = ω̄ (DCSGD),
    ``scale_harmonic`` = the largest per-coordinate harmonic mean of ``σ_{i,j}/√B`` over agents
    (``scale_harmonic_min`` the smallest) and ``dim`` = d (DSignSGD; valid in Phase 3).
    Returns ``inf`` where the bound's step-size condition fails.
    """
    kind = check_choice("kind", kind, KINDS)
    steps = _steps(steps)
    eta, n = lr, agents
    if method == "dsgd":
        factor, const = ((1 - 2 * mu * eta * (1 - L * eta / 2), L * eta**2 * noise_trace / (2 * n))
                         if kind == "discrete" else (2 * mu, eta * L * noise_trace / (2 * n)))
    elif method == "dcsgd":
        rho = 1 - (L * eta / 2) * (1 + omega / n) if kind == "discrete" \
            else 1 - eta * L * omega / (2 * n)
        if rho <= 0:
            factor, const = (2.0, 0.0) if kind == "discrete" else (-1.0, 0.0)
        elif kind == "discrete":
            factor, const = 1 - 2 * mu * eta * rho, L * eta**2 * compressed_trace / (2 * n)
        else:
            factor, const = 2 * mu * rho, eta * L * compressed_trace / (2 * n)
    elif method == "dsignsgd":
        c3 = chord_slopes(nu)[0]
        low = scale_harmonic if scale_harmonic_min is None else scale_harmonic_min
        if kind == "discrete":
            gain = c3 / scale_harmonic - L * eta * ell(nu) ** 2 / (2 * low**2)
            factor, const = 1 - 2 * mu * eta * gain, L * eta**2 * dim / (2 * n)
        else:
            factor, const = 2 * mu * c3 / scale_harmonic, eta * L * dim / (2 * n)
    else:
        raise ValueError(f"method must be one of dsgd, dcsgd, dsignsgd, got {method!r}")
    bound, rate, level = _affine(delta0, factor, const, steps, eta, kind)
    return BoundResult(steps, steps * eta, bound, kind, rate, level)


def pl_bound_for(model: QuadraticModel, steps: int | np.ndarray,
                 kind: str = "discrete") -> BoundResult:
    """:func:`pl_bound` with μ = λ_min, L = λ_max, Δ₀ = f(x0) and the model's noise."""
    lam = model.eigenvalues
    var = model.variances
    harmonic = 1.0 / (1.0 / model.scales).mean(0)
    return pl_bound(model.method, steps, lr=model.lr, delta0=model.initial_loss(),
                    mu=float(lam.min()), L=float(lam.max()), agents=model.agents,
                    noise_trace=float(var.sum(1).mean()),
                    compressed_trace=float(((1 + model.omegas) * var.sum(1)).mean()),
                    omega=model.omega_mean, dim=model.dim,
                    scale_harmonic=float(harmonic.max()),
                    scale_harmonic_min=float(harmonic.min()), nu=model.nu, kind=kind)


@dataclass
class PhaseBound:
    """DSignSGD's bound through its three phases on a diagonal quadratic.

    ``bound`` is the chained recursion; ``phase`` the phase (1, 2, 3) at each recorded step
    (1: every coordinate in Phase 1, 3: every coordinate in Phase 3, else 2); ``phase1`` and
    ``phase3`` the closed forms of Phases 1 and 3 where they apply (NaN elsewhere).
    """

    steps: np.ndarray
    bound: np.ndarray
    phase: np.ndarray
    phase1: np.ndarray
    phase3: np.ndarray
    level3: float


def dsignsgd_phase_bound(model: QuadraticModel, steps: int | np.ndarray) -> PhaseBound:
    """Bound on E f for DSignSGD through Phases 1–3 on ``f = ½ Σ λ_j x_j²`` (§3).

    Per coordinate ``u ≈ E x²`` follows ``u' = u − 2η√u·ρ̄(√u) + η²[(1 − mean_i ρ_i²)/N + ψ̄²]``:
    ``ρ_i`` is the chord lower bound of the sign mean at ``y = λ√u/s_i`` (Phase 1: φ(y₁); Phase 2:
    the line ``m Y + q⁻``; Phase 3: ``c₃ y``) and ``ψ̄ = mean_i min(ℓy_i, 1)`` bounds the mean
    message. Closed forms: Phase 1 ``u ≤ (|x0| − φ(y₁)ηk)² + η²k(1 + (1 − φ(y₁)²)/N)``;
    Phase 3 ``u' ≤ (1 − 2ηc₃λ/σ_H + η²ℓ²λ²/σ_H²)u + η²/N``.
    """
    if model.method != "dsignsgd" or not model.diagonal:
        raise ValueError("dsignsgd_phase_bound needs method 'dsignsgd' on a diagonal hessian")
    steps = _steps(steps)
    lam, eta, n = model.eigenvalues, model.lr, model.agents
    inv = 1.0 / model.scales                     # (N, d)
    ell_ = ell(model.nu)
    c3, _, _, phi1 = chord_slopes(model.nu)
    u = model.x0**2
    last = int(steps.max())
    marks = {int(k): i for i, k in enumerate(steps)}
    bound = np.empty(steps.size)
    phase = np.empty(steps.size, dtype=int)
    phase1 = np.full(steps.size, np.nan)
    phase3 = np.full(steps.size, np.nan)
    inv_h = inv.mean(0)
    a3 = 1 - 2 * eta * c3 * lam * inv_h + eta**2 * ell_**2 * lam**2 * inv_h**2
    c_3 = eta**2 / n
    e1 = 1 + (1 - phi1**2) / n
    entered3 = np.full(model.dim, -1)
    u3 = np.zeros(model.dim)
    for k in range(last + 1):
        r = np.sqrt(u)
        y = lam * r * inv                        # (N, d)
        per = np.where((y >= Y_PHASE1).all(0), 1, np.where((y <= Y_PHASE3).all(0), 3, 2))
        newly = (per == 3) & (entered3 < 0)
        entered3[newly], u3[newly] = k, u[newly]
        if k in marks:
            i = marks[k]
            bound[i] = 0.5 * lam @ u
            phase[i] = 1 if (per == 1).all() else 3 if (per == 3).all() else 2
            if (per == 1).all():
                p1 = (np.maximum(np.abs(model.x0) - phi1 * eta * k, 0) ** 2
                      + eta**2 * k * e1)
                phase1[i] = 0.5 * lam @ p1
            if (per == 3).all():
                span = k - entered3
                p3 = a3**span * u3 + c_3 * (1 - a3**span) / (1 - a3)
                phase3[i] = 0.5 * lam @ p3
        if k == last:
            break
        rho = sign_mean_lower(y, model.nu)
        psi_up = np.minimum(ell_ * y, 1.0).mean(0)
        u = u - 2 * eta * r * rho.mean(0) + eta**2 * ((1 - (rho**2).mean(0)) / n + psi_up**2)
        u = np.maximum(u, 0.0)
    level3 = float(0.5 * np.sum(lam * c_3 / (1 - a3)))
    return PhaseBound(steps, bound, phase, phase1, phase3, level3)
