"""The quadratic model every closed form works on (THEORY.md §4).

``f(x) = ½ xᵀHx`` (usually ``H = diag(λ)``), N agents, agent ``i`` sees
``g_i = Hx + Z_i`` with ``Z_{i,j} = s_{i,j} n`` (``s = σ/√B`` after the batch convention, ``n``
Gaussian or Student-t), and sends ``m_i = C_i(g_i)`` (DCSGD) or ``sign(g_i)`` (DSignSGD).

For DCSGD each agent's compressor enters only through ``Φ_i(g) = Cov_ξ[C_i(g)]``; the exact
closed forms need ``Φ_i(g) = ω_i Diag(g)² + c_i Off(g gᵀ)`` (identity, Rand-k, Bernoulli: §1).
QSGD and natural compression only bound ``diag Φ ≤ ω g²``; their curves are then upper bounds
(``exact_compression`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import check_choice, check_positive
from ._laws import unit_variance

METHODS = ("dsgd", "dcsgd", "dsignsgd")
_EXACT = ("identity", "randk", "bernoulli")


def _vector(name: str, value: Any, size: int | None = None) -> np.ndarray:
    array = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if array.ndim != 1 or (size is not None and array.size not in (1, size)):
        raise ValueError(f"{name} must be a number or a length-{size} vector, "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()!r}")
    return np.broadcast_to(array, (size,)).copy() if size is not None else array


@dataclass(frozen=True)
class QuadraticModel:
    """One method on ``f = ½ xᵀHx`` with per-agent noise scales and compressors.

    ``scales`` has shape (N, d) and already includes the batch (``σ_{i,j}/√B``); ``nu`` is None
    for Gaussian noise, else the Student-t degrees of freedom. ``omegas``/``offdiag`` hold ω_i
    and c_i of each agent (zeros for DSGD and DSignSGD).
    """

    method: str
    hessian: np.ndarray
    scales: np.ndarray
    lr: float
    x0: np.ndarray
    nu: float | None = None
    omegas: np.ndarray = field(default=None)  # type: ignore[assignment]
    offdiag: np.ndarray = field(default=None)  # type: ignore[assignment]
    exact_compression: bool = True

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        h = np.asarray(self.hessian, dtype=np.float64)
        if h.ndim == 2 and h.shape[0] == h.shape[1] and not np.any(h - np.diag(np.diag(h))):
            h = np.diag(h).copy()              # a diagonal H is kept as its eigenvalues, O(d)
        if not ((h.ndim == 1 and h.size > 0) or (h.ndim == 2 and h.shape[0] == h.shape[1]
                                                  and np.allclose(h, h.T))):
            raise ValueError(f"hessian must be a symmetric (d, d) matrix or a length-d vector "
                             f"of eigenvalues, got shape {h.shape}")
        if not np.all(np.isfinite(h)):
            raise ValueError("hessian must be finite")
        d = h.shape[0]
        scales = np.asarray(self.scales, dtype=np.float64)
        if scales.ndim == 0:
            scales = scales.reshape(1, 1)
        if scales.ndim == 1:
            scales = scales[:, None]
        scales = np.broadcast_to(scales, (scales.shape[0], d)).copy()
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise ValueError("scales must be finite and > 0 (shape (agents, d))")
        agents = scales.shape[0]
        omegas = np.zeros(agents) if self.omegas is None else _vector("omegas", self.omegas,
                                                                       agents)
        offdiag = np.zeros(agents) if self.offdiag is None else _vector("offdiag", self.offdiag,
                                                                         agents)
        if np.any(omegas < 0):
            raise ValueError(f"omegas must be >= 0, got {omegas.tolist()!r}")
        if self.method != "dcsgd" and np.any(omegas != 0):
            raise ValueError(f"omegas must be 0 for method {self.method!r} (only dcsgd "
                             f"compresses with an unbiased compressor)")
        object.__setattr__(self, "hessian", h)
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "omegas", omegas)
        object.__setattr__(self, "offdiag", offdiag)
        object.__setattr__(self, "lr", check_positive("lr", self.lr))
        object.__setattr__(self, "x0", _vector("x0", self.x0, d))
        if self.nu is not None:
            object.__setattr__(self, "nu", check_positive("nu", self.nu))

    # -- sizes and derived quantities -----------------------------------------------------
    @property
    def dim(self) -> int:
        return self.hessian.shape[0]

    @property
    def agents(self) -> int:
        return self.scales.shape[0]

    @property
    def diagonal(self) -> bool:
        """True when H is diagonal; ``hessian`` then holds its diagonal only (length d)."""
        return self.hessian.ndim == 1

    @property
    def eigenvalues(self) -> np.ndarray:
        """λ_j: the diagonal of H when H is diagonal, else its eigenvalues (ascending)."""
        return self.hessian.copy() if self.diagonal else np.linalg.eigvalsh(self.hessian)

    @property
    def matrix(self) -> np.ndarray:
        """H as a dense (d, d) array (refused past ``landscapes.DENSE_BUDGET`` bytes)."""
        if not self.diagonal:
            return self.hessian
        from ..landscapes import check_dense

        check_dense("H of this quadratic model", self.dim)
        return np.diag(self.hessian)

    @property
    def variances(self) -> np.ndarray:
        """Var Z_{i,j} = s_{i,j}² · Var(n), shape (N, d); inf for Student-t with ν ≤ 2."""
        return self.scales**2 * unit_variance(self.nu)

    @property
    def finite_variance(self) -> bool:
        return bool(np.isfinite(unit_variance(self.nu)))

    @property
    def omega_mean(self) -> float:
        """ω̄ = mean_i ω_i."""
        return float(self.omegas.mean())

    def initial_loss(self) -> float:
        if self.diagonal:
            return float(0.5 * np.sum(self.hessian * self.x0**2))
        return float(0.5 * self.x0 @ self.hessian @ self.x0)

    def replace(self, **changes: Any) -> QuadraticModel:
        """A copy with some fields changed (validated again)."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return QuadraticModel(**(values | changes))

    # -- construction from the library's objects ------------------------------------------
    @classmethod
    def from_problem(cls, method: Any, landscape: Any, noise: Any, *, lr: float,
                     agents: int = 1, batch: int = 1, x0: Any = 1.0) -> QuadraticModel:
        """Build from the same arguments as :func:`compsde.simulate` (a quadratic landscape)."""
        from ..noise import StudentT
        from ..problem import Problem

        problem = Problem(method, landscape, noise, lr=lr, agents=agents, batch=batch, x0=x0)
        land = problem.landscape
        if land.name != "quadratic":
            raise ValueError(f"landscape must be a quadratic for the closed forms, got "
                             f"{land.spec!r}")
        import torch

        d = land.dim
        hessian = (land.eigenvalues if land.diagonal else land.matrix).numpy()  # O(d) if diagonal
        scales = problem.noise.scales(problem.agents, d, problem.batch).numpy()
        nu = problem.noise.nu if isinstance(problem.noise, StudentT) else None
        x0_arr = problem.start(1, torch.float64, "cpu")[0].numpy()
        meth = problem.method
        omegas = offdiag = None
        exact = True
        if meth.name == "dcsgd":
            comps = meth.compressors_for(problem.agents)
            omegas = [float(c.omega(d)) for c in comps]
            offdiag = [_offdiag(c, d) for c in comps]
            exact = all(c.name in _EXACT for c in comps)
        return cls(meth.name, hessian, scales, problem.lr, x0_arr, nu, omegas, offdiag, exact)


def _offdiag(compressor: Any, d: int) -> float:
    """c in Φ(g) = ω Diag(g)² + c Off(ggᵀ), read from the compressor's diag + rank-one form."""
    import torch

    if compressor.name not in _EXACT:
        return 0.0
    _, c = compressor.covariance_diag_rank_one(torch.ones(d, dtype=torch.float64))
    return float(c)


