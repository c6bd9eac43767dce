"""Stationary expected loss and linear speedup on quadratics (THEORY.md §4).

DSGD/DCSGD on ``H = diag(λ)``: ``m_j* = C_j/(1 − A_j)`` (exact discrete) or ``b_j/a_j`` (SDE),
``E f* = ½ Σ_j λ_j m_j*``, i.e. ``Σ_j η ū_j / (2N (2 − ηλ_j(1 + ω̄/N)))`` discrete and
``η ū /(4N) · Σ_j (1 − ηω̄λ_j/(2N))^{-1}`` SDE, ``ū_j = mean_i (1+ω_i) Var Z_{i,j}``.
Infinite (``inf``) beyond the stability limit or when the noise has no variance (§6).

DSignSGD: the SDE value is the Phase-3 level ``≈ η d σ_H/(4ℓN√B)``; the exact discrete value is
the stationary law of each coordinate's lattice chain (``x0 + (η/N)ℤ``), solved directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from .._checks import check_choice, check_int
from ._laws import cdf
from .curves import KINDS, _moment_operator, linear_coefficients, sign_count_probabilities
from .model import QuadraticModel


def stationary_moments(model: QuadraticModel, kind: str = "discrete") -> np.ndarray:
    """``E x_j²`` at stationarity, per coordinate (diagonal H); inf where it does not exist."""
    kind = check_choice("kind", kind, KINDS)
    if model.method == "dsignsgd" and kind == "discrete":
        return np.array([_lattice_stationary(model, j) for j in range(model.dim)])
    if not model.diagonal:
        raise ValueError("stationary_moments needs a diagonal hessian (use stationary_loss)")
    if model.method != "dsignsgd" and not model.finite_variance:
        return np.full(model.dim, math.inf)
    first, second = linear_coefficients(model, kind)
    with np.errstate(divide="ignore"):
        if kind == "discrete":
            return np.where(first < 1, second / np.maximum(1 - first, 1e-300), math.inf)
        return np.where(first > 0, second / np.maximum(first, 1e-300), math.inf)


def stationary_loss(model: QuadraticModel, kind: str = "discrete") -> float:
    """``lim E f(x_k) − f*`` (discrete) or ``lim E f(X_t) − f*`` (SDE); inf if not finite."""
    kind = check_choice("kind", kind, KINDS)
    if model.method != "dsignsgd" and not model.diagonal:
        if not model.finite_variance:
            return math.inf
        op, const = _moment_operator(model, kind)
        eye = np.eye(op.shape[0])
        system = eye - op if kind == "discrete" else -op
        stable = (np.abs(np.linalg.eigvals(op)).max() < 1) if kind == "discrete" \
            else (np.linalg.eigvals(op).real.max() < 0)
        if not stable:
            return math.inf
        vec = np.linalg.solve(system, const)
        return float(0.5 * model.matrix.reshape(-1) @ vec)
    return float(0.5 * np.sum(model.eigenvalues * stationary_moments(model, kind)))


def _lattice_stationary(model: QuadraticModel, j: int) -> float:
    """E x_j² under the stationary law of DSignSGD's lattice chain for coordinate j."""
    lam, eta, n = model.eigenvalues[j], model.lr, model.agents
    h = eta / n
    a, b = linear_coefficients(model, "sde")
    reach = 14 * math.sqrt(b[j] / a[j]) + 4 * eta
    # reachable sites: x0 + h·(n0 + step·ℤ); N even → even multiples of h only
    period = 2 if n % 2 == 0 else 1
    base = model.x0[j] - h * period * math.floor(model.x0[j] / (h * period))
    idx = np.arange(-math.ceil(reach / (h * period)) - 1, math.ceil(reach / (h * period)) + 2)
    sites = base + h * period * idx
    probs = sign_count_probabilities(cdf(lam * sites[:, None] / model.scales[None, :, j],
                                         model.nu))
    size = sites.size
    rows, cols, vals = [], [], []
    for count in range(n + 1):
        shift = (n - 2 * count) // period
        dest = np.clip(np.arange(size) + shift, 0, size - 1)  # reflect at the far edges
        rows.append(dest)
        cols.append(np.arange(size))
        vals.append(probs[:, count])
    trans = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows),
                                                      np.concatenate(cols))), (size, size))
    system = (trans - sparse.identity(size, format="csr")).tolil()
    system[size - 1, :] = np.ones(size)
    rhs = np.zeros(size)
    rhs[-1] = 1.0
    law = spsolve(system.tocsr(), rhs)
    return float(law @ sites**2)


def linear_speedup(model: QuadraticModel, agents: Sequence[int],
                   kind: str = "discrete") -> np.ndarray:
    """Stationary loss for each N in ``agents``; agent i reuses agent ``i mod N₀``'s noise/ω.

    Leading order every method's level is ∝ 1/N (§4): DSGD ``η d σ̄²/(4NB)``, DCSGD the same
    times ``(1+ω)``, DSignSGD ``η d σ_H/(4ℓN√B)``.
    """
    out = []
    base = model.agents
    for count in agents:
        count = check_int("agents", count, minimum=1)
        pick = np.arange(count) % base
        out.append(stationary_loss(model.replace(scales=model.scales[pick],
                                                 omegas=model.omegas[pick],
                                                 offdiag=model.offdiag[pick]), kind))
    return np.array(out)
