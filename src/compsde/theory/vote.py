"""Stationary loss of DSignSGD with the server's majority vote on a quadratic (THEORY.md §8a).

Phase 3 (``|∂_j f| ≪ σ_j``, i.i.d. agents): with ``m = 2p − 1 ≈ ℓ ∂_j f/σ_j`` the vote's mean is
``E v ≈ c_N m``, ``c_N = ½ d E v/dp`` at ``p = ½`` (``c_N = N·C(N−1, (N−1)/2)/2^{N−1}`` for odd
N, ≈ √(2N/π)), and its variance ``1 − P(tie)``. The coordinate is an Ornstein–Uhlenbeck process
with rate ``c_N ℓ λ_j/σ_j`` and diffusion ``η (1 − P_tie)``, so
``E f_j* = η σ_j (1 − P_tie)/(4 c_N ℓ)`` — against DSignSGD's ``η σ_j/(4ℓN)``: the vote does not
average the agents' noise away (level ratio ``N(1 − P_tie)/c_N`` ≈ √(πN/2)).

Exact discrete: the vote moves ``x_j`` by ``−η sign(2K − N)`` (0 on a tie), a birth–death chain on
``x0_j + ηℤ`` whose stationary law follows from detailed balance.
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_int
from ._laws import cdf, ell
from .curves import sign_count_probabilities
from .model import QuadraticModel


def vote_gain(agents: int) -> float:
    """``c_N = ½ d/dp (P[Bin(N,p) > N/2] − P[Bin(N,p) < N/2])`` at ``p = ½`` (module docstring)."""
    n = check_int("agents", agents, minimum=1)
    above = n // 2 + 1                 # smallest count with K > N/2
    below = (n + 1) // 2               # smallest count with K ≥ N/2, i.e. not K < N/2
    rate = n * (math.comb(n - 1, above - 1) + math.comb(n - 1, below - 1)) / 2 ** (n - 1)
    return rate / 2


def vote_tie(agents: int) -> float:
    """``P(K = N/2)`` at ``p = ½``: 0 for odd N, ``C(N, N/2)/2^N`` for even N."""
    n = check_int("agents", agents, minimum=1)
    return 0.0 if n % 2 else math.comb(n, n // 2) / 2**n


def vote_phase3_level(lr: float, scales: np.ndarray, agents: int,
                      nu: float | None = None) -> float:
    """``Σ_j η σ_j (1 − P_tie)/(4 c_N ℓ_ν)`` for i.i.d. agents with noise scales ``σ_j``
    (after the batch convention; module docstring)."""
    sigma = np.asarray(scales, dtype=np.float64).reshape(-1)
    return float(lr * sigma.sum() * (1 - vote_tie(agents))
                 / (4 * vote_gain(agents) * ell(nu)))


def vote_lattice_moment(model: QuadraticModel, j: int) -> float:
    """``E x_j²`` under the stationary law of the vote's chain for coordinate ``j``."""
    lam, eta, n = model.eigenvalues[j], model.lr, model.agents
    sigma = float(model.scales[:, j].max())
    level = eta * sigma / (4 * vote_gain(n) * ell(model.nu)) / lam       # Phase-3 E x²/2
    reach = 16 * math.sqrt(2 * level) + 8 * eta + sigma / lam
    base = model.x0[j] - eta * math.floor(model.x0[j] / eta)
    idx = np.arange(-math.ceil(reach / eta) - 1, math.ceil(reach / eta) + 2)
    sites = base + eta * idx
    probs = sign_count_probabilities(cdf(lam * sites[:, None] / model.scales[None, :, j],
                                         model.nu))
    counts = np.arange(n + 1)
    down = probs[:, 2 * counts > n].sum(1)        # K > N/2: v = +1, x moves by −η
    up = probs[:, 2 * counts < n].sum(1)          # K < N/2: v = −1, x moves by +η
    with np.errstate(divide="ignore"):
        steps = np.log(up[:-1]) - np.log(down[1:])
    log_law = np.concatenate([[0.0], np.cumsum(steps)])
    law = np.exp(log_law - log_law.max())
    law /= law.sum()
    return float(law @ sites**2)


def vote_stationary_loss(model: QuadraticModel, kind: str = "discrete") -> float:
    """``lim E f`` of the majority vote on a diagonal quadratic: the exact chain
    (``"discrete"``) or the Phase-3 level (``"phase3"``, i.i.d. agents only)."""
    if not model.diagonal:
        raise ValueError("the vote's stationary loss needs a diagonal hessian")
    n = model.agents
    if n < 2:
        raise ValueError(f"agents must be at least 2 for a majority vote, got {n}")
    if kind == "phase3":
        if not np.allclose(model.scales, model.scales[:1]):
            raise ValueError("the vote's Phase-3 level is derived for i.i.d. agents (equal "
                             "scales); use kind='discrete' for unequal agents")
        return vote_phase3_level(model.lr, model.scales[0], n, model.nu)
    if kind != "discrete":
        raise ValueError(f"kind must be one of discrete, phase3, got {kind!r}")
    return float(0.5 * sum(model.eigenvalues[j] * vote_lattice_moment(model, j)
                           for j in range(model.dim)))
