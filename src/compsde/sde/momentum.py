"""Signum's SDE of the pair (x, m_1..m_N) on the scaling 1 − β = c·η (THEORY.md §8a).

At fixed β the momenta relax at rate (1 − β)/η, which diverges as η → 0; with ``c = (1 − β)/η``
held fixed (the scaling of Malladi et al. 2022 for Adam) the pair has the limit

    dm_i = c (∇f(x) − m_i) dt + c √η Σ_i^{1/2} dW_i,     dx = −mean_i sign(m_i) dt

(``−sign(Σ_i sign(m_i)) dt`` with ``vote=majority``; ``sign(0) = +1`` as on the wire). The
signs are deterministic given the m_i, so x has no diffusion of its own. ``β`` is read as
``c = (1 − β)/η`` at the given lr. Euler–Maruyama with step ``h`` updates m first and moves x
along the signs of the new m (the algorithm's order); at ``h = η`` that step *is* the algorithm
with Gaussian noise, so the integrator refuses fewer than :data:`MIN_SUBSTEPS` sub-steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..chunks import Chunk, ChunkJob, ChunkResult, chunk_generator
from ..problem import Problem
from ..recording import LossRecorder

# h = η/s with s ≥ 4: at s = 1 the Euler–Maruyama step is the algorithm itself (THEORY.md §8a).
MIN_SUBSTEPS = 4
DEFAULT_SUBSTEPS = 8


def is_momentum(problem: Problem) -> bool:
    """True when ``problem``'s method is Signum, whose SDE is the pair (x, m) of this module."""
    return problem.method.name == "signum"


def relaxation_rate(beta: float, lr: float) -> float:
    """``c = (1 − β)/η``: the momenta's relaxation rate per unit SDE time (THEORY.md §8a)."""
    return (1.0 - beta) / lr


def direction(m: Tensor, vote: bool) -> Tensor:
    """The x-drift's negative: ``mean_i sign(m_i)``, or ``sign(Σ_i sign(m_i))`` (0 on a tie)
    with ``vote``; ``m`` has shape (runs, agents, d), sign(0) = +1."""
    positive = (m >= 0).sum(dim=-2, dtype=m.dtype)
    if vote:
        return positive.mul_(2.0).sub_(m.shape[-2]).sign_()
    return positive.mul_(2.0 / m.shape[-2]).sub_(1.0)


def check_momentum(problem: Problem, substeps: int, *, stability: bool, moments: str,
                   model: Any) -> None:
    """Refuse what the pair SDE does not take (before any work)."""
    spec = problem.method.spec
    if problem.lr_schedule != "constant":
        raise ValueError(f"lr_schedule must be constant for the SDE of {spec}: c = (1 − β)/η "
                         f"is read at the given lr (THEORY.md §8a), got {problem.lr_schedule!r}")
    if not problem.noise.finite_variance:
        raise ValueError(f"no SDE for {spec} under {problem.noise.spec}: the momentum's "
                         f"diffusion c√η Σ^(1/2) needs a noise covariance (Student-t with "
                         f"nu <= 2 has none, THEORY.md §6); use nu > 2 or Gaussian noise")
    if stability or moments != "auto" or model is not None:
        raise ValueError(f"stability, moments and model apply to the x-only SDEs; {spec} "
                         f"has the pair SDE of (x, m) (THEORY.md §8a)")
    if substeps < MIN_SUBSTEPS:
        raise ValueError(f"dt must be at most lr/{MIN_SUBSTEPS} for the SDE of {spec}: with "
                         f"dt = lr the Euler–Maruyama step of the pair (x, m) is the algorithm "
                         f"itself (THEORY.md §8a); got {substeps} sub-step(s) per iteration")
    if problem.method.beta == 0.0:
        raise ValueError(f"beta must be > 0 for the pair SDE of {spec}: beta = 0 is DSignSGD "
                         f"(c = 1/η, use dsignsgd)")


def describe(problem: Problem) -> dict[str, Any]:
    """What the model is, for ``result.json``."""
    beta = problem.method.beta
    return {"model": "signum pair SDE (x, m), 1 - beta = c * lr (THEORY.md §8a)",
            "moments": None, "stability_correction": False,
            "momentum_rate_c": relaxation_rate(beta, problem.lr)}


@dataclass(frozen=True)
class MomentumJob(ChunkJob):
    """Integrates a list of chunks of the pair SDE (picklable); chunk ``c`` draws its Brownian
    increments from ``(seed, c, 0)``."""

    label = "sde"

    problem: Problem
    steps: int
    substeps: int
    marks: np.ndarray
    threshold: float
    seed: int
    dtype: torch.dtype
    device: torch.device
    record_mean_x: bool = False
    progress: bool = False
    keep_device: bool = True

    def _chunk(self, chunk: Chunk, bar: Any) -> ChunkResult:
        from .integrate import NormalStream, record_paths

        problem, marks = self.problem, self.marks
        method, land = problem.method, problem.landscape
        lr = problem.lr
        h = lr / self.substeps
        rate = relaxation_rate(method.beta, lr)
        n, d = problem.agents, problem.dim
        std = problem.noise.variance(n, d, problem.batch, dtype=self.dtype,
                                     device=self.device).sqrt_()        # Σ_i^{1/2}, (N, d)
        std.mul_(rate * math.sqrt(lr) * math.sqrt(h))                   # c √η √h Σ^{1/2}
        normals = NormalStream(chunk_generator(self.seed, chunk.index, self.device, 0),
                               self.dtype, self.device)
        recorder = LossRecorder(marks, chunk.size, self.threshold)
        x_sum = np.zeros((len(marks), d)) if self.record_mean_x else None
        x = problem.start(chunk.size, self.dtype, self.device, rows=chunk.rows)
        m = torch.zeros((chunk.size, n, d), dtype=self.dtype, device=self.device)
        next_mark = 0
        for k in range(self.steps + 1):
            if k == marks[next_mark]:
                record_paths(recorder, next_mark, x, problem.loss(x), x_sum)
                next_mark += 1
            if k == self.steps:
                break
            for _ in range(self.substeps):
                pull = land.grad(x).unsqueeze(-2).sub(m).mul_(rate * h)   # c(∇f − m) h
                m.add_(pull).add_(normals.draw((chunk.size, n, d)).mul_(std))
                x.sub_(direction(m, method.vote), alpha=h)
            bar.update(1)
        return ChunkResult(chunk, recorder.losses, x if self.keep_device else x.cpu(), x_sum)
