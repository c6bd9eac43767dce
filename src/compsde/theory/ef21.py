"""EF21's exact second moments on a diagonal quadratic (THEORY.md §8b).

On ``f = ½ Σ_j λ_j x_j²`` with a mask compressor (``C'(v) = s ⊙ v``, ``s_j ~ Bern(q)``: identity
q = 1, scaled Rand-k q = k/d, scaled Bernoulli q = p, each divided by 1 + ω as EF21 uses them)
every coordinate's state ``z = (x, h_1..h_N)`` follows the random linear recursion (the
simulator's order: ``h_i ← (1 − s_i) h_i + s_i (λx + σ_i ξ_i)``, then ``x ← x − η mean_i h_i``)

    z' = A(s) z + b,   A(s) = A₀ + Σ_i s_i c_i r_iᵀ,   b = Σ_i s_i σ_i ξ_i c_i,

with ``c_i = e_i − (η/N) e_x`` and ``r_i = λ e_x − e_i``. With the s_i independent the second
moment ``M = E zzᵀ`` obeys exactly

    M' = Ā M Āᵀ + Σ_i [q_i(1 − q_i) r_iᵀ M r_i + q_i σ_i²] c_i c_iᵀ,   Ā = A₀ + Σ_i q_i c_i r_iᵀ,

a positive linear map plus a constant. It is mean-square stable iff ρ(Ā) < 1 and ρ(V G) < 1
(``V = diag(q_i(1 − q_i))``, ``G_ik = r_iᵀ P_k r_i``, ``P_k = Σ_n Āⁿ c_k c_kᵀ Āᵀⁿ``), the
stationary M is ``P_Q + Σ_k u_k P_k`` with ``(I − V G) u = V a`` (N Lyapunov solves and an N×N
system), and ``E f = ½ Σ_j λ_j M_xx,j``. Only second moments of the noise enter: Gaussian or
Student-t ν > 2 (with its variance), with either batch draw (§1a). Top-k and scaled sign make
the recursion nonlinear: no closed form is derived for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import solve_discrete_lyapunov

from .._checks import check_int, check_positive

__all__ = [
    "MASK_COMPRESSORS",
    "EF21Quadratic",
    "keep_probability",
    "mask_law",
    "no_closed_form",
]

# Compressors that EF21 uses as a per-coordinate 0/1 mask (C/(1 + ω) of a scaled one).
MASK_COMPRESSORS = ("identity", "randk", "bernoulli")
# Past this many agents the dense (N+1)²-square Kronecker operator is not formed.
DENSE_AGENTS = 31


def no_closed_form(spec: str) -> str:
    """The one-line reason EF21 with ``spec`` has no exact moments here."""
    return (f"no closed form is derived for ef21:{spec}: the exact second moments of THEORY.md "
            f"§8b need a mask compressor ({', '.join(MASK_COMPRESSORS)}); with {spec} "
            f"C'(g − h) depends on the vector itself, so the recursion is not linear "
            f"(simulate it with compsde simulate)")


def keep_probability(compressor: Any, d: int) -> float:
    """q = P(coordinate kept) of EF21's ``C'``: 1 (identity), k/d (Rand-k), p (Bernoulli).

    ValueError for other compressors (Top-k, scaled sign, QSGD, natural: not a mask, §8b).
    """
    d = check_int("d", d, minimum=1)
    name = getattr(compressor, "name", None)
    if name == "identity":
        return 1.0
    if name == "randk":
        return compressor.k_for(d) / d
    if name == "bernoulli":
        return float(compressor.p)
    raise ValueError(no_closed_form(getattr(compressor, "spec", str(compressor))))


def mask_law(compressor: Any, d: int) -> tuple[float, float]:
    """``(q, γ)`` with ``C'(v) = γ · s ⊙ v``, ``s_j ~ Bern(q)``: EF21 divides a scaled mask
    compressor (``C = s ⊙ v / q``) by ``1 + ω = 1/q``, so γ = 1 (THEORY.md §8b)."""
    return keep_probability(compressor, d), 1.0


def _agents_by_coords(name: str, value: Any, agents: int | None, d: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or (agents is not None and arr.shape[0] not in (1, agents)) \
            or arr.shape[1] not in (1, d):
        raise ValueError(f"{name} must be a number, a per-agent vector or an (agents, d) "
                         f"array, got shape {np.shape(value)}")
    return np.broadcast_to(arr, (agents or arr.shape[0], d)).copy()


@dataclass(frozen=True)
class EF21Quadratic:
    """EF21 on ``f = ½ Σ λ_j x_j²``: per-agent noise variances and keep-probabilities.

    ``variances`` (N, d): Var Z_{i,j} with the batch included (σ²/B, §1); ``keep`` (N, d):
    ``q_{i,j}``, the probability that agent i's ``C'`` keeps coordinate j; ``x0`` (d,): the
    start (h_i = 0); ``gain`` (N, d): γ in ``C'(v) = γ s ⊙ v`` (1 for every compressor EF21
    uses, :func:`mask_law`; the recursion holds for any γ with ``s_i`` replaced by ``γ_i s_i``).
    Numbers and per-agent vectors broadcast.
    """

    eigenvalues: np.ndarray
    variances: np.ndarray
    keep: np.ndarray
    lr: float
    x0: np.ndarray
    gain: Any = 1.0

    def __post_init__(self) -> None:
        lam = np.atleast_1d(np.asarray(self.eigenvalues, dtype=np.float64))
        if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)):
            raise ValueError(f"eigenvalues must be a non-empty finite 1-D array, got "
                             f"{self.eigenvalues!r}")
        d = lam.size
        var = _agents_by_coords("variances", self.variances, None, d)
        if not np.all(np.isfinite(var)) or np.any(var < 0):
            raise ValueError("variances must be finite and >= 0 (Student-t needs nu > 2)")
        keep = _agents_by_coords("keep", self.keep, var.shape[0], d)
        if var.shape[0] == 1 and keep.shape[0] > 1:
            var = np.broadcast_to(var, keep.shape).copy()
        if np.any(keep <= 0) or np.any(keep > 1) or not np.all(np.isfinite(keep)):
            raise ValueError(f"keep must be probabilities in (0, 1], got {keep.tolist()!r}")
        gain = _agents_by_coords("gain", self.gain, keep.shape[0], d)
        if np.any(gain <= 0) or not np.all(np.isfinite(gain)):
            raise ValueError(f"gain must be finite and > 0, got {gain.tolist()!r}")
        x0 = np.broadcast_to(np.asarray(self.x0, dtype=np.float64), (d,)).copy()
        if not np.all(np.isfinite(x0)):
            raise ValueError("x0 must be finite")
        object.__setattr__(self, "eigenvalues", lam)
        object.__setattr__(self, "variances", var)
        object.__setattr__(self, "keep", keep)
        object.__setattr__(self, "gain", gain)
        object.__setattr__(self, "lr", check_positive("lr", self.lr))
        object.__setattr__(self, "x0", x0)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_problem(cls, method: Any, landscape: Any, noise: Any, *, lr: float,
                     agents: int = 1, batch: int = 1, x0: Any = 1.0) -> EF21Quadratic:
        """From the arguments of :func:`compsde.simulate` (``ef21:<mask compressor>`` on a
        diagonal quadratic, noise with finite variance); ValueError otherwise."""
        import torch

        from ..problem import Problem

        problem = Problem(method, landscape, noise, lr=lr, agents=agents, batch=batch, x0=x0)
        meth, land, law = problem.method, problem.landscape, problem.noise
        if meth.feedback != "ef21":
            raise ValueError(f"method must be ef21:<compressor> for the EF21 moments, got "
                             f"{meth.spec!r}")
        if land.name != "quadratic" or not land.diagonal:
            raise ValueError(f"landscape must be a diagonal quadratic (quadratic:d=..., "
                             f"quadratic:eig=...) for EF21's exact moments, got {land.spec!r}")
        if not law.finite_variance:
            raise ValueError(f"noise must have a finite variance for EF21's exact moments "
                             f"(Gaussian, or Student-t with nu > 2), got {law.spec!r}: with "
                             f"nu <= 2 the second moments do not exist (THEORY.md §6)")
        d, n = land.dim, problem.agents
        laws = np.array([mask_law(c, d) for c in meth.compressors_for(n)])     # (N, 2)
        variances = law.variance(n, d, problem.batch).numpy()
        start = problem.start(1, torch.float64, "cpu")[0].numpy()
        ones = np.ones((1, d))
        return cls(land.eigenvalues.numpy(), variances, laws[:, :1] * ones, problem.lr, start,
                   laws[:, 1:] * ones)

    # -- sizes ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.eigenvalues.size

    @property
    def agents(self) -> int:
        return self.variances.shape[0]

    # -- the recursion, per distinct coordinate --------------------------------------------
    def _distinct(self, with_x0: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows (λ, q_·, σ²_·, γ_·[, x0]) of the distinct coordinates and each coordinate's
        row."""
        cols = [self.eigenvalues[:, None], self.keep.T, self.variances.T, self.gain.T]
        if with_x0:
            cols.append(self.x0[:, None])
        table = np.concatenate(cols, axis=1)
        rows, inverse = np.unique(table, axis=0, return_inverse=True)
        return rows, inverse.reshape(-1)

    def _pieces(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Ā (J, n, n), C (n, N), R (J, n, N) and, per agent (J, N), the mean E[γs] = γq, the
        variance v = γ²q(1 − q) and the noise weight E[(γs)²] σ² = γ²q σ² of distinct rows."""
        n_agents, eta = self.agents, self.lr
        lam = rows[:, 0]
        keep = rows[:, 1:1 + n_agents]
        var = rows[:, 1 + n_agents:1 + 2 * n_agents]
        gain = rows[:, 1 + 2 * n_agents:1 + 3 * n_agents]
        q = gain * keep
        n = n_agents + 1
        c = np.zeros((n, n_agents))
        c[1:, :] = np.eye(n_agents)
        c[0, :] = -eta / n_agents                             # c_i = e_i − (η/N) e_x
        r = np.zeros((lam.size, n, n_agents))
        r[:, 0, :] = lam[:, None]
        r[:, 1:, :] = -np.eye(n_agents)                       # r_i = λ e_x − e_i
        a0 = np.eye(n)
        a0[0, 1:] = -eta / n_agents
        abar = a0[None] + np.einsum("ai,ji,jbi->jab", c, q, r)
        return abar, c, r, q, gain * q * (1.0 - keep), gain * q * var

    def step_moments(self, m: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """One step ``M ↦ Ā M Āᵀ + Σ_i [v_i r_iᵀ M r_i + q_i σ_i²] c_i c_iᵀ`` for ``m`` of
        shape (J, N+1, N+1), one per distinct coordinate (``rows`` from :meth:`_distinct`)."""
        rows = self._distinct(False)[0] if rows is None else rows
        abar, c, r, q, v, var = self._pieces(rows)
        return self._step(m, abar, c, r, q, v, var)

    @staticmethod
    def _step(m: np.ndarray, abar: np.ndarray, c: np.ndarray, r: np.ndarray, q: np.ndarray,
              v: np.ndarray, noise: np.ndarray) -> np.ndarray:
        w = v * np.einsum("jai,jab,jbi->ji", r, m, r) + noise             # (J, N)
        return abar @ m @ abar.transpose(0, 2, 1) + np.einsum("ai,ji,bi->jab", c, w, c)

    def kronecker(self) -> np.ndarray:
        """The linear part of the second-moment map on row-major vec(M), (J, n², n²):
        ``Ā⊗Ā + Σ_i v_i (c_i⊗c_i)(r_i⊗r_i)ᵀ`` (dense; N ≤ :data:`DENSE_AGENTS`)."""
        if self.agents > DENSE_AGENTS:
            raise ValueError(f"agents must be at most {DENSE_AGENTS} for the dense "
                             f"second-moment operator, got {self.agents}")
        rows, _ = self._distinct(False)
        abar, c, r, _, v, _ = self._pieces(rows)
        n = c.shape[0]
        kk = np.einsum("jab,jcd->jacbd", abar, abar).reshape(len(rows), n * n, n * n)
        cc = np.einsum("ai,bi->abi", c, c).reshape(n * n, -1)             # (n², N)
        rr = np.einsum("jai,jbi->jabi", r, r).reshape(len(rows), n * n, -1)
        return kk + np.einsum("ki,ji,jli->jkl", cc, v, rr)

    def mean_square_radius(self) -> np.ndarray:
        """ρ of the second-moment map per coordinate (d,) (dense; mean-square stable iff < 1)."""
        _rows, inverse = self._distinct(False)
        radius = np.abs(np.linalg.eigvals(self.kronecker())).max(axis=1)
        return radius[inverse]

    def _lyapunov(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per distinct row: ρ(Ā), P_k (J, N, n, n), G (J, N, N)."""
        abar, c, r, q, v, var = self._pieces(rows)
        rho = np.abs(np.linalg.eigvals(abar)).max(axis=1)
        n_agents = self.agents
        p = np.full((len(rows), n_agents, *abar.shape[1:]), np.inf)
        g = np.full((len(rows), n_agents, n_agents), np.inf)
        for j in np.flatnonzero(rho < 1):
            for k in range(n_agents):
                p[j, k] = solve_discrete_lyapunov(abar[j], np.outer(c[:, k], c[:, k]))
            g[j] = np.einsum("ai,kab,bi->ik", r[j], p[j], r[j])
        return rho, p, g, q, v, var, r

    def stable(self) -> np.ndarray:
        """Mean-square stability per coordinate (d,): ρ(Ā) < 1 and ρ(V G) < 1 (module doc)."""
        rows, inverse = self._distinct(False)
        rho, _, g, _, v, _, _ = self._lyapunov(rows)
        ok = rho < 1
        for j in np.flatnonzero(ok):
            ok[j] = np.abs(np.linalg.eigvals(v[j][:, None] * g[j])).max() < 1
        return ok[inverse]

    def stationary_moments(self) -> np.ndarray:
        """Stationary ``M = E zzᵀ`` per coordinate, (d, N+1, N+1); inf where not stable."""
        rows, inverse = self._distinct(False)
        rho, p, g, _q, v, var, _ = self._lyapunov(rows)
        n = self.agents + 1
        out = np.full((len(rows), n, n), np.inf)
        for j in np.flatnonzero(rho < 1):
            vg = v[j][:, None] * g[j]
            if np.abs(np.linalg.eigvals(vg)).max() >= 1:
                continue
            weights = var[j]                                      # Q = Σ_i γ_i²q_i σ_i² c_i c_iᵀ
            p_q = np.einsum("k,kab->ab", weights, p[j])
            a = g[j] @ weights                                        # r_iᵀ P_Q r_i
            u = np.linalg.solve(np.eye(self.agents) - vg, v[j] * a)
            out[j] = p_q + np.einsum("k,kab->ab", u, p[j])
        return out[inverse]

    def stationary_loss(self) -> float:
        """``lim E f(x_k) = ½ Σ_j λ_j M_xx,j`` (inf when a coordinate is not mean-square
        stable)."""
        mxx = self.stationary_moments()[:, 0, 0]
        if not np.all(np.isfinite(mxx)):
            return math.inf
        return float(0.5 * np.sum(self.eigenvalues * mxx))

    def loss_curve(self, steps: int | np.ndarray) -> np.ndarray:
        """Exact ``E f(x_k)`` at the given steps (ascending ints ≥ 0), iterating the recursion
        from ``M₀ = z₀z₀ᵀ`` (``z₀ = (x0, 0, …, 0)``)."""
        marks = np.atleast_1d(np.asarray(steps))
        if marks.ndim != 1 or marks.size == 0 or np.any(marks < 0) \
                or np.any(np.diff(marks) < 0) or not np.all(marks == np.round(marks)):
            raise ValueError(f"steps must be ascending integers >= 0, got {steps!r}")
        marks = marks.astype(np.int64)
        rows, inverse = self._distinct(True)
        abar, c, r, q, v, var = self._pieces(rows)
        n = self.agents + 1
        m = np.zeros((len(rows), n, n))
        m[:, 0, 0] = rows[:, -1] ** 2
        lam = rows[:, 0]
        counts = np.bincount(inverse, minlength=len(rows))
        out = np.empty(marks.size)
        k = 0
        for index, mark in enumerate(marks):
            while k < mark:
                m = self._step(m, abar, c, r, q, v, var)
                k += 1
            with np.errstate(over="ignore", invalid="ignore"):
                out[index] = 0.5 * np.sum(counts * lam * m[:, 0, 0])
        return out
