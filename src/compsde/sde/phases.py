"""DSignSGD's three phases (THEORY.md §3): the Phase-1 ODE, Phase-2 drift bounds, Phase-3 SDE.

Per coordinate ``j`` and agent ``i`` the signal-to-noise ratio is ``Y_ij = |∂_j f| / (√2 σ_ij)``
and the sign mean is ``φ(Y) = 2F(√2 Y) − 1`` (``erf(Y)`` for Gaussian noise). With thresholds
``low < high`` (default 1 and 3/2):

- Phase 1 (``Y_ij > high`` for every agent): ``φ ≈ 1``, ``S ≈ 0`` → ODE ``dX = −sign(∇f) dt``.
- Phase 2 (in between): ``m Y + q⁻ ≤ φ(Y) ≤ m Y + q⁺`` on ``[low, high]`` — ``m`` the chord's
  slope, ``q⁻`` its intercept, ``q⁺`` that of the parallel tangent (Gaussian: 0.24681, 0.59589,
  0.61448) — so the drift magnitude lies between ``mean_i (m Y_ij + q⁻)`` and ``… + q⁺``.
- Phase 3 (``Y_ij < low`` for every agent): ``φ(Y) ≈ ℓ √2 Y`` with ``ℓ = 2F'(0)`` →
  ``dX = −ℓ mean_i(∇f/σ_i) dt + √(η/N) √(Diag(1 − mean_i (ℓ ∂f/σ_i)²)) dW``.

Each phase model is an :class:`~compsde.sde.models.SDEModel`, so ``simulate_sde(...,
model=phase_builder("phase3"))`` integrates it exactly like the full SDE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_float
from ..noise import NoiseLaw
from ..problem import Problem
from .diffusion import Covariance, DiagonalCov
from .models import SDEModel

THRESHOLDS = (1.0, 1.5)
PHASE_MODELS = ("phase1", "phase2-slow", "phase2-fast", "phase3")


def _check_thresholds(low: float, high: float) -> tuple[float, float]:
    low = check_float("low", low, low=0.0, low_open=True)
    high = check_float("high", high, low=0.0, low_open=True)
    if not low < high:
        raise ValueError(f"thresholds must satisfy 0 < low < high, got low={low}, high={high}")
    return low, high


def _require_dsignsgd(problem: Problem) -> None:
    if problem.method.name != "dsignsgd":
        raise ValueError(f"method must be dsignsgd for the phase models (THEORY.md §3), got "
                         f"{problem.method.spec!r}")


def snr(problem: Problem, x: Tensor) -> Tensor:
    """``Y_ij = |∂_j f(x)| / (√2 σ_ij)``, shape (..., agents, d) (σ includes the batch, §1)."""
    p = problem
    scales = p.noise.scales(p.agents, p.dim, p.batch, dtype=x.dtype, device=x.device)
    return p.landscape.grad(x).abs().unsqueeze(-2) / (math.sqrt(2.0) * scales)


def phase_labels(problem: Problem, x: Tensor, low: float = THRESHOLDS[0],
                 high: float = THRESHOLDS[1]) -> Tensor:
    """The phase (1, 2 or 3, int8) of every coordinate of ``x`` (..., d) (THEORY.md §3).

    1 where ``Y_ij > high`` for all agents, 3 where ``Y_ij < low`` for all agents, 2 otherwise.
    """
    low, high = _check_thresholds(low, high)
    y = snr(problem, x)
    labels = torch.full(y.shape[:-2] + y.shape[-1:], 2, dtype=torch.int8, device=x.device)
    labels[(y > high).all(-2)] = 1
    labels[(y < low).all(-2)] = 3
    return labels


def phase_windows(labels: np.ndarray | Tensor, times: np.ndarray) -> dict[int, tuple[float,
                                                                                       float]]:
    """For labels (records, d): per phase, the first and last time at which *every* coordinate
    is in that phase (phases absent from all records are left out)."""
    labels = np.asarray(labels)
    out: dict[int, tuple[float, float]] = {}
    for phase in (1, 2, 3):
        rows = np.flatnonzero((labels == phase).all(axis=-1))
        if rows.size:
            out[phase] = (float(times[rows[0]]), float(times[rows[-1]]))
    return out


def sign_mean_function(noise: NoiseLaw) -> Callable[[Tensor], Tensor]:
    """``φ(Y) = 2F(√2 Y) − 1``, the sign mean at signal-to-noise ratio ``Y`` (unit scale)."""
    def phi(y: Tensor) -> Tensor:
        return noise.standard_cdf(y * math.sqrt(2.0)).mul(2.0).sub(1.0)
    return phi


def phase2_constants(noise: NoiseLaw, low: float = THRESHOLDS[0],
                     high: float = THRESHOLDS[1]) -> dict[str, float]:
    """Chord slope ``m`` and intercepts ``q⁻`` (chord) ``q⁺`` (parallel tangent) of ``φ`` on
    ``[low, high]``; ``φ`` is concave there, so ``m Y + q⁻ ≤ φ(Y) ≤ m Y + q⁺`` (THEORY.md §3).

    The tangent point is found on a grid of 20001 points (error ~1e-10 in ``q⁺``).
    """
    low, high = _check_thresholds(low, high)
    phi = sign_mean_function(noise)
    ends = phi(torch.tensor([low, high], dtype=torch.float64))
    slope = float(ends[1] - ends[0]) / (high - low)
    q_minus = float(ends[0]) - slope * low
    grid = torch.linspace(low, high, 20001, dtype=torch.float64)
    gap = phi(grid) - slope * grid
    best = int(gap.argmax())
    return {"m": slope, "q_minus": q_minus, "q_plus": float(gap[best]),
            "y_tangent": float(grid[best]), "low": low, "high": high}


def phase2_drift_bounds(problem: Problem, x: Tensor, low: float = THRESHOLDS[0],
                        high: float = THRESHOLDS[1]) -> tuple[Tensor, Tensor]:
    """Bounds on the magnitude of DSignSGD's drift, ``lo ≤ |b_j| ≤ hi`` (runs, d):
    ``|b_j| = mean_i φ(Y_ij)`` and ``φ`` lies between two lines. ``hi`` (tangent) holds for
    every ``Y``; ``lo`` (chord) where every agent's ``Y_ij`` is in ``[low, high]`` — with
    heterogeneous agents a coordinate labelled 2 may have some agents outside."""
    _require_dsignsgd(problem)
    consts = phase2_constants(problem.noise, low, high)
    line = snr(problem, x).mean(-2).mul(consts["m"])
    return line + consts["q_minus"], line + consts["q_plus"]


class _ZeroCov(DiagonalCov):
    """No diffusion (an ODE)."""

    def __init__(self, like: Tensor):
        super().__init__(torch.zeros_like(like))
        self.noise_dim = 0

    def apply(self, z: Tensor) -> Tensor:
        return self.diag


class Phase1Model(SDEModel):
    """Phase-1 ODE ``dX = −sign(∇f) dt`` (``f`` falls at ``‖∇f‖₁``; independent of noise, N)."""

    name = "phase1-ode"

    def __init__(self, problem: Problem):
        _require_dsignsgd(problem)
        super().__init__(problem)

    def evaluate(self, x: Tensor, lr: float) -> tuple[Tensor, Covariance]:
        return torch.sign(self.problem.landscape.grad(x)).neg_(), _ZeroCov(x)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "moments": "Phase-1 ODE dX = -sign(grad f) dt",
                "stability_correction": False}


class Phase2BoundModel(SDEModel):
    """ODE with the Phase-2 drift bound: ``dX = −sign(∇f) mean_i(m Y_i + q) dt``.

    ``side="slow"`` uses ``q⁻`` (the smallest drift: an upper bound on the loss), ``"fast"``
    uses ``q⁺`` (a lower bound); valid while the coordinates stay in Phase 2.
    """

    def __init__(self, problem: Problem, side: str = "slow", low: float = THRESHOLDS[0],
                 high: float = THRESHOLDS[1]):
        _require_dsignsgd(problem)
        super().__init__(problem)
        self.side = check_choice("side", side, ("slow", "fast"))
        self.low, self.high = low, high
        self.name = f"phase2-{self.side}"

    def evaluate(self, x: Tensor, lr: float) -> tuple[Tensor, Covariance]:
        lo, hi = phase2_drift_bounds(self.problem, x, self.low, self.high)
        size = lo if self.side == "slow" else hi
        return torch.sign(self.problem.landscape.grad(x)).neg_().mul_(size), _ZeroCov(x)

    def describe(self) -> dict[str, Any]:
        q = "q-" if self.side == "slow" else "q+"
        return {"model": self.name, "stability_correction": False,
                "moments": f"Phase-2 bound ODE: drift -sign(grad f) mean_i(m Y_i + {q})"}


class Phase3Model(SDEModel):
    """Linearised Phase-3 SDE: ``b = −ℓ mean_i(∇f/σ_i)``, ``S = Diag(1 − mean_i(ℓ∇f/σ_i)²)``.

    ``ℓ = 2F'(0)`` (Gaussian √(2/π), Student-t ``ℓ_ν``); ``S`` is clamped to [0, 1].
    """

    name = "phase3-sde"

    def __init__(self, problem: Problem):
        _require_dsignsgd(problem)
        super().__init__(problem)
        self.ell = 2.0 * problem.noise.standard_density_at_zero()

    def evaluate(self, x: Tensor, lr: float) -> tuple[Tensor, Covariance]:
        p = self.problem
        inverse = p.noise.scales(p.agents, p.dim, p.batch, dtype=x.dtype,
                                 device=x.device).reciprocal()
        m = p.landscape.grad(x).unsqueeze(-2).mul(inverse).mul_(self.ell)   # (runs, N, d)
        drift = m.mean(-2).neg_()
        diag = m.square_().mean(-2).neg_().add_(1.0).clamp_(0.0, 1.0)
        return drift, DiagonalCov(diag)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "stability_correction": False,
                "moments": f"Phase-3 linearised SDE, ell={self.ell:.6g}"}


@dataclass(frozen=True)
class PhaseBuilder:
    """Builds one of DSignSGD's phase models for a problem (picklable)."""

    kind: str
    low: float = THRESHOLDS[0]
    high: float = THRESHOLDS[1]

    def __call__(self, problem: Problem, generator: Any = None) -> SDEModel:
        if self.kind == "phase1":
            return Phase1Model(problem)
        if self.kind == "phase3":
            return Phase3Model(problem)
        return Phase2BoundModel(problem, self.kind.removeprefix("phase2-"), self.low, self.high)


def phase_builder(kind: str, low: float = THRESHOLDS[0],
                  high: float = THRESHOLDS[1]) -> Callable[[Problem, Any], SDEModel]:
    """A model builder for :func:`~compsde.sde.integrate.simulate_sde`: ``"phase1"``,
    ``"phase2-slow"``, ``"phase2-fast"`` or ``"phase3"``."""
    return PhaseBuilder(check_choice("model", kind, PHASE_MODELS), low, high)
