"""Exact expected-loss curves on quadratics (THEORY.md §4): SDE and exact discrete versions.

DSGD/DCSGD, diagonal ``H = diag(λ)``: ``m_j = E x_j²`` obeys a linear recursion
``m_j(k+1) = A_j m_j(k) + C_j`` with (``ū_j = mean_i (1+ω_i) Var Z_{i,j}``)
``A_j = (1 − ηλ_j)² + η² λ_j² ω̄/N``, ``C_j = η² ū_j/N`` (exact for identity, Rand-k and
Bernoulli), and the order-1 SDE gives ``ṁ_j = −a_j m_j + b_j``, ``a_j = 2λ_j − ηλ_j²ω̄/N``,
``b_j = η ū_j/N``. ``E f = ½ Σ_j λ_j m_j``. Off-diagonal compressor covariance (Rand-k's
``c Off(ggᵀ)``) does not enter when H is diagonal; for a general H :func:`moment_curve` evolves
the full matrix ``M = E xxᵀ`` where it does.

DSignSGD: the SDE curve is the Phase-3 linearisation (§3, §4), valid once every coordinate is in
Phase 3; the exact discrete curve propagates each coordinate's law on its lattice
``x0 + (η/N)ℤ`` (coordinates are independent on a diagonal quadratic), which is exact in all
three phases up to the truncated mass reported in ``CurveResult.lost_mass``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm

from .._checks import check_choice
from ..landscapes import check_dense
from ._laws import cdf, ell
from .model import QuadraticModel

KINDS = ("discrete", "sde")


@dataclass
class CurveResult:
    """Expected loss at ``steps`` (time ``t = steps · lr``) and, for the lattice, the lost mass."""

    steps: np.ndarray
    time: np.ndarray
    loss: np.ndarray
    kind: str
    lost_mass: float = 0.0


def _steps(steps: int | np.ndarray) -> np.ndarray:
    array = np.arange(int(steps) + 1) if np.isscalar(steps) else np.asarray(steps)
    if array.ndim != 1 or array.size == 0 or np.any(array < 0):
        raise ValueError("steps must be a count >= 0 or a 1-D array of step indices >= 0")
    return array.astype(np.int64)


def linear_coefficients(model: QuadraticModel, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate ``(A, C)`` (discrete: ``m ← A m + C``) or ``(a, b)`` (SDE: ``ṁ = −am + b``).

    DSGD and DCSGD only (diagonal H); DSignSGD's SDE version is its Phase-3 linearisation.
    """
    kind = check_choice("kind", kind, KINDS)
    lam, eta, n = model.eigenvalues, model.lr, model.agents
    if model.method == "dsignsgd":
        if kind != "sde":
            raise ValueError("kind must be 'sde' for DSignSGD's linear coefficients (its exact "
                             "discrete curve is the lattice recursion of dsignsgd_lattice_curve)")
        inv = 1.0 / model.scales
        ell_ = ell(model.nu)
        a = 2 * ell_ * lam * inv.mean(0) + eta * ell_**2 * lam**2 * (inv**2).mean(0) / n
        return a, np.full_like(lam, eta / n)
    u = ((1.0 + model.omegas)[:, None] * model.variances).mean(0)
    wbar = model.omega_mean
    if kind == "discrete":
        return (1 - eta * lam) ** 2 + eta**2 * lam**2 * wbar / n, eta**2 * u / n
    return 2 * lam - eta * lam**2 * wbar / n, eta * u / n


def _linear_curve(m0: np.ndarray, first: np.ndarray, second: np.ndarray, steps: np.ndarray,
                  kind: str, lr: float) -> np.ndarray:
    """m_j at each step for ``m ← A m + C`` (discrete) or ``ṁ = −a m + b`` (SDE), (steps, d)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if kind == "discrete":
            power = first[None, :] ** steps[:, None]
            near_one = np.isclose(first, 1.0, rtol=0, atol=1e-15)
            geometric = np.where(near_one, steps[:, None] * 1.0,
                                 (1 - power) / np.where(near_one, 1.0, 1 - first))
            return power * m0 + second * geometric
        t = steps[:, None] * lr
        decay = np.exp(-first[None, :] * t)
        small = np.abs(first) < 1e-300
        ratio = np.where(small, t, (1 - decay) / np.where(small, 1.0, first))
        return decay * m0 + second * ratio


def loss_curve(model: QuadraticModel, steps: int | np.ndarray, kind: str = "discrete",
               *, lattice_tol: float = 1e-18) -> CurveResult:
    """E f(x_k) − f* on the quadratic, exact discrete recursion or SDE (module docstring).

    For a non-diagonal H (DSGD/DCSGD) this uses :func:`moment_curve`. For DSGD/DCSGD with
    Student-t ν ≤ 2 the variance is infinite and so is the curve (after step 0).
    """
    kind = check_choice("kind", kind, KINDS)
    steps = _steps(steps)
    if model.method == "dsignsgd":
        if kind == "discrete":
            return dsignsgd_lattice_curve(model, steps, tol=lattice_tol)
        if not model.diagonal:
            raise ValueError("DSignSGD's curves need a diagonal hessian")
    elif not model.diagonal:
        return moment_curve(model, steps, kind)
    first, second = linear_coefficients(model, kind)
    m = _linear_curve(model.x0**2, first, second, steps, kind, model.lr)
    loss = 0.5 * (m * model.eigenvalues).sum(1)
    return CurveResult(steps, steps * model.lr, loss, kind)


def _moment_operator(model: QuadraticModel, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """vec(M) ↦ linear map and constant of the second-moment dynamics for any symmetric H."""
    d, eta, n = model.dim, model.lr, model.agents
    check_dense("the second-moment operator of a full H (acting on vec(E xxᵀ))", d * d)
    h = model.matrix
    eye = np.eye(d)
    var = model.variances                      # (N, d)
    w, c = model.omegas, model.offdiag
    # noise part: (η²/N or η/N) mean_i [diag(v_i) + ω_i Diag(diag(HMH) + v_i) + c_i Off(HMH)]
    const = np.diag(((1 + w)[:, None] * var).mean(0))
    hh = np.kron(h, h)                         # vec(HMH) = (H ⊗ H) vec(M)
    diag_sel = np.diag(eye.reshape(-1))        # keeps the diagonal entries of a vec
    comp = w.mean() * diag_sel @ hh + c.mean() * (np.eye(d * d) - diag_sel) @ hh
    if kind == "discrete":
        g = eye - eta * h
        return np.kron(g, g) + eta**2 / n * comp, eta**2 / n * const.reshape(-1)
    drift = -(np.kron(h, eye) + np.kron(eye, h))
    return drift + eta / n * comp, eta / n * const.reshape(-1)


def moment_curve(model: QuadraticModel, steps: int | np.ndarray,
                 kind: str = "discrete") -> CurveResult:
    """DSGD/DCSGD on any quadratic: evolve the full ``M = E xxᵀ``; ``E f = ½ tr(HM)``.

    Discrete: ``M' = (I−ηH)M(I−ηH) + (η²/N) mean_i[Σ_i + ω_i Diag(diag(HMH) + v_i)
    + c_i Off(HMH)]`` (exact for Rand-k, whose ``c_i = −(d−k)/(k(d−1))``, and Bernoulli);
    SDE: ``Ṁ = −HM − MH + (η/N) mean_i[…]``.
    """
    kind = check_choice("kind", kind, KINDS)
    if model.method == "dsignsgd":
        raise ValueError("method must be dsgd or dcsgd for moment_curve")
    steps = _steps(steps)
    op, const = _moment_operator(model, kind)
    vec0 = np.outer(model.x0, model.x0).reshape(-1)
    out = np.empty(steps.size)
    hvec = model.matrix.reshape(-1)
    if kind == "discrete":
        order = np.argsort(steps)
        vec, done = vec0.copy(), 0
        for idx in order:
            for _ in range(int(steps[idx]) - done):
                vec = op @ vec + const
            done = int(steps[idx])
            out[idx] = 0.5 * hvec @ vec
    else:
        try:
            fixed = np.linalg.solve(op, -const)
        except np.linalg.LinAlgError:
            fixed = np.full_like(const, np.inf)
        for idx, k in enumerate(steps):
            vec = expm(op * k * model.lr) @ (vec0 - fixed) + fixed
            out[idx] = 0.5 * hvec @ vec
    return CurveResult(steps, steps * model.lr, out, kind)


def sign_count_probabilities(p: np.ndarray) -> np.ndarray:
    """Poisson-binomial law of the number of +1 signs: ``p`` (S, N) → (S, N+1)."""
    states, agents = p.shape
    probs = np.zeros((states, agents + 1))
    probs[:, 0] = 1.0
    for i in range(agents):
        pi = p[:, i:i + 1]
        shifted = np.zeros_like(probs)
        shifted[:, 1:] = probs[:, :-1]
        probs = probs * (1 - pi) + shifted * pi
    return probs


def dsignsgd_lattice_curve(model: QuadraticModel, steps: int | np.ndarray, *,
                           tol: float = 1e-18) -> CurveResult:
    """Exact E f for DSignSGD on a diagonal quadratic by propagating each coordinate's law.

    x_j moves by ``η(1 − 2P/N)``, P ~ Poisson-binomial(p_i = F(λ_j x_j / s_{i,j})) the number of
    agents with ``g_{i,j} ≥ 0`` (sign(0) = +1), so it lives on ``x0_j + (η/N)ℤ``. Sites with
    mass below ``tol`` are dropped (their total is ``lost_mass``).
    """
    if model.method != "dsignsgd" or not model.diagonal:
        raise ValueError("dsignsgd_lattice_curve needs method 'dsignsgd' on a diagonal hessian")
    steps = _steps(steps)
    lam, eta, n, d = model.eigenvalues, model.lr, model.agents, model.dim
    h = eta / n
    a, b = linear_coefficients(model, "sde")
    reach = np.abs(model.x0) + 12 * np.sqrt(b / a) + 4 * eta   # 12 Phase-3 stationary stds
    lo = int(np.floor(((-reach - model.x0) / h).min()))
    hi = int(np.ceil(((reach - model.x0) / h).max()))
    sites = model.x0[:, None] + h * np.arange(lo, hi + 1)[None, :]          # (d, S)
    p = cdf(lam[:, None, None] * sites[:, :, None] / model.scales.T[:, None, :], model.nu)
    probs = sign_count_probabilities(p.reshape(-1, n)).reshape(d, sites.shape[1], n + 1)
    probs = np.ascontiguousarray(probs.transpose(2, 0, 1))                # (N+1, d, S)
    offsets = n - 2 * np.arange(n + 1)         # site shift when P agents send +1
    x2 = sites**2
    size = sites.shape[1]
    left, right = -lo, -lo + 1                 # active window [left, right), shared by coords
    mass = np.ones((d, 1))
    total = np.zeros(steps.size)
    marks = {int(k): i for i, k in enumerate(steps)}
    lost = 0.0
    for k in range(int(steps.max()) + 1):
        if k in marks:
            total[marks[k]] = 0.5 * lam @ (mass * x2[:, left:right]).sum(1)
        if k == steps.max():
            break
        width = right - left
        new = np.zeros((d, width + 2 * n))
        for count, off in enumerate(offsets):
            new[:, off + n:off + n + width] += mass * probs[count, :, left:right]
        nl = left - n                          # lattice index of new[:, 0]
        cut_l, cut_r = max(0, -nl), max(0, nl + width + 2 * n - size)     # off the lattice
        alive = np.nonzero((new > tol).any(0))[0]
        first, last = max(alive[0], cut_l), min(alive[-1] + 1, width + 2 * n - cut_r)
        lost += new[:, :first].sum() + new[:, last:].sum()
        mass = new[:, first:last]
        left, right = nl + first, nl + last
    return CurveResult(steps, steps * eta, total, "discrete", lost_mass=float(lost / d))
