"""Step-size stability limits (THEORY.md §4).

DCSGD's second moment obeys ``m ← [(1 − ηλ)² + η²λ²ω̄/N] m + C``: it settles iff
``η < 2N/((N + ω̄) λ_max)`` (exact discrete). The order-1 SDE (``a = 2λ − ηλ²ω̄/N``) gives the
looser ``η < 2N/(ω̄ λ_max)`` of §4. DSGD is the case ω̄ = 0 (``η < 2/λ_max``; no SDE limit);
DSignSGD has none (each step moves every coordinate by at most η).
"""

from __future__ import annotations

import math

from .._checks import check_choice, check_float, check_int, check_positive
from .curves import KINDS

_METHODS = ("dsgd", "dcsgd", "dsignsgd")


def stability_limit(method: str, *, agents: int, L: float, omega: float = 0.0,
                    kind: str = "discrete") -> float:
    """Largest stable lr (exclusive): ``2N/((N + ω̄)L)`` discrete, ``2N/(ω̄L)`` SDE; inf if none.

    ``omega`` is ω̄ = mean_i ω_i (0 for DSGD), ``L`` the largest Hessian eigenvalue.
    """
    method = check_choice("method", method, _METHODS)
    kind = check_choice("kind", kind, KINDS)
    agents = check_int("agents", agents, minimum=1)
    L = check_positive("L", L)
    omega = check_float("omega", omega, low=0.0)
    if method == "dsignsgd":
        return math.inf
    if method == "dsgd":
        omega = 0.0
    if kind == "sde":
        return math.inf if omega == 0 else 2 * agents / (omega * L)
    return 2 * agents / ((agents + omega) * L)


def check_stable(method: str, lr: float, *, agents: int, L: float, omega: float = 0.0,
                 kind: str = "discrete", name: str = "lr") -> float:
    """Return ``lr`` if below :func:`stability_limit`, else raise ValueError explaining it."""
    lr = check_positive(name, lr)
    limit = stability_limit(method, agents=agents, L=L, omega=omega, kind=kind)
    if lr >= limit:
        if method == "dcsgd":
            formula = "2N/((N + ω)·L)" if kind == "discrete" else "2N/(ω·L)"
            values = f"N={agents}, ω={omega:g}, L={L:g}"
            reason = ("the compression noise lr²·ω·L²·x²/N added each step outgrows the "
                      "contraction 1 − (1 − lr·L)²")
        else:
            formula, values = "2/L", f"L={L:g}"
            reason = "each step overshoots the minimum by more than it started (|1 − lr·L| > 1)"
        raise ValueError(
            f"{name} must be < {limit:.4g} for {method} (stability limit {name} < {formula} with "
            f"{values}), got {lr:g}: beyond it {reason} and the expected loss diverges "
            f"(THEORY.md §4)")
    return lr
