"""Noise-law functions in NumPy for the closed forms (THEORY.md §1, §3).

A law is Gaussian (``nu=None``) or Student-t with ``nu > 0`` degrees of freedom; ``scale`` is
the scale σ (not the standard deviation). Used by every closed form; the simulator samples the
same laws through :mod:`compsde.noise`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

ArrayLike = float | np.ndarray

# DSignSGD phase thresholds on y = |∂f|/σ (THEORY.md §3: Y = y/√2 > 3/2 is Phase 1, Y < 1
# Phase 3). The same y thresholds are used for Student-t noise.
Y_PHASE1 = 1.5 * math.sqrt(2.0)
Y_PHASE3 = math.sqrt(2.0)


def unit_variance(nu: float | None) -> float:
    """Variance of the unit-scale law: 1 (Gaussian), ν/(ν−2) (Student-t, ν > 2), else inf."""
    if nu is None:
        return 1.0
    return nu / (nu - 2.0) if nu > 2.0 else math.inf


def sign_mean(y: ArrayLike, nu: float | None) -> np.ndarray:
    """φ(y) = E[sign(y + n)] = 2F(y) − 1 for the unit law n (erf(y/√2) when Gaussian, §3)."""
    y = np.asarray(y, dtype=np.float64)
    if nu is None:
        return special.erf(y / math.sqrt(2.0))
    return 2.0 * special.stdtr(nu, y) - 1.0


def cdf(y: ArrayLike, nu: float | None) -> np.ndarray:
    """F(y) of the unit law."""
    y = np.asarray(y, dtype=np.float64)
    if nu is None:
        return special.ndtr(y)
    return special.stdtr(nu, y)


def ell(nu: float | None) -> float:
    """ℓ = 2 f(0) = φ'(0): √(2/π) (Gaussian), 2Γ((ν+1)/2)/(√(πν) Γ(ν/2)) (Student-t), §3."""
    if nu is None:
        return math.sqrt(2.0 / math.pi)
    return 2.0 * math.exp(special.gammaln((nu + 1) / 2) - special.gammaln(nu / 2)
                          - 0.5 * math.log(math.pi * nu))


def chord_slopes(nu: float | None) -> tuple[float, float, float, float]:
    """Piecewise-linear lower bound of the concave φ through (0,0), (y3, φ(y3)), (y1, φ(y1)).

    Returns ``(slope3, phi3, slope2, phi1)``: φ(y) ≥ slope3·y on [0, y3] (Phase 3),
    ≥ phi3 + slope2 (y − y3) on [y3, y1] (Phase 2, the lower line m Y + q⁻ of §3), ≥ phi1 beyond.
    """
    phi3 = float(sign_mean(Y_PHASE3, nu))
    phi1 = float(sign_mean(Y_PHASE1, nu))
    return phi3 / Y_PHASE3, phi3, (phi1 - phi3) / (Y_PHASE1 - Y_PHASE3), phi1


def sign_mean_lower(y: ArrayLike, nu: float | None) -> np.ndarray:
    """The chord lower bound ρ(|y|) ≤ φ(|y|) of :func:`chord_slopes` (all three phases)."""
    slope3, phi3, slope2, phi1 = chord_slopes(nu)
    y = np.abs(np.asarray(y, dtype=np.float64))
    return np.where(y <= Y_PHASE3, slope3 * y,
                    np.where(y <= Y_PHASE1, phi3 + slope2 * (y - Y_PHASE3), phi1))
