"""Moments of the server's majority vote v = sign(Σ_i sign(g_i)) (THEORY.md §8 "Beyond the paper").

With K = #{i : g_i ≥ 0} (agents independent, q_i = P(g_i ≥ 0) = (1 + E sign g_i)/2 per
coordinate), ``v = sign(2K − N)``: ``E v = P(K > N/2) − P(K < N/2)`` and
``E v² = 1 − P(K = N/2)`` (the tie, even N only). For i.i.d. agents K ~ Bin(N, q) and, with
p = P(sign g_i = sign ∂f), ``E v = sign(∂f)(2 P[Bin(N, p) > N/2] − 1 + P[Bin(N, p) = N/2])``
(the last term only for even N). One message per step: the SDE's covariance is ``N · Var v`` in
front of the common ``η/N``, i.e. ``η Var v``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..problem import Problem
from .diffusion import Covariance, DiagonalCov
from .moments import MessageMoments


def count_distribution(q: Tensor, agents: int, shared: bool) -> Tensor:
    """P(K = k), k = 0…N, shape (..., N + 1), for K the number of agents with g_i ≥ 0.

    ``shared``: ``q`` (..., d) is every agent's P(g_i ≥ 0) and K ~ Bin(N, q) (log-space
    binomial terms); else ``q`` is (..., N, d) and K is Poisson-binomial (exact convolution
    over the agents, O(N²) per coordinate).
    """
    if shared:
        k = torch.arange(agents + 1, dtype=q.dtype, device=q.device)
        log_comb = torch.tensor([math.lgamma(agents + 1) - math.lgamma(j + 1)
                                 - math.lgamma(agents - j + 1) for j in range(agents + 1)],
                                dtype=q.dtype, device=q.device)
        qq = q.unsqueeze(-1)
        logs = torch.special.xlogy(k, qq) + torch.special.xlogy(agents - k, 1.0 - qq)
        return (logs + log_comb).exp()
    dist = torch.zeros((*q.shape[:-2], q.shape[-1], agents + 1), dtype=q.dtype, device=q.device)
    dist[..., 0] = 1.0
    for i in range(agents):
        qi = q[..., i, :].unsqueeze(-1)
        shifted = torch.zeros_like(dist)
        shifted[..., 1:] = dist[..., :-1]
        dist = dist * (1.0 - qi) + shifted * qi
    return dist


def vote_moments(sign_means: Tensor, agents: int, shared: bool) -> tuple[Tensor, Tensor]:
    """``(E v, P(v = 0))`` per coordinate, shape (..., d), for N = ``agents`` agents whose
    ``E[sign g_i]`` is ``sign_means``: (..., d) when ``shared``, else (..., N, d)."""
    q = sign_means.add(1.0).mul_(0.5).clamp_(0.0, 1.0)
    dist = count_distribution(q, agents, shared)
    half = agents / 2.0
    k = torch.arange(agents + 1, device=q.device)
    above = dist[..., k > half].sum(-1)
    below = dist[..., k < half].sum(-1)
    tie = dist[..., agents // 2] if agents % 2 == 0 else torch.zeros_like(above)
    return above - below, tie


class MajorityVoteMoments(MessageMoments):
    """``b = −E v``, ``S = N · Diag(1 − P(tie) − (E v)²)`` for the server's vote (THEORY.md §8).

    The closed form needs independent noise coordinates (as DSignSGD's): then the vote's
    coordinates are independent and its covariance is diagonal.
    """

    def __init__(self, problem: Problem):
        super().__init__(problem)
        law = problem.noise
        kind = "erf" if law.name == "gaussian" else f"Student-t CDF, nu={getattr(law, 'nu', '?')}"
        scales = law.scales(problem.agents, problem.dim, problem.batch)
        self.shared = bool((scales == scales[:1]).all())
        count = "binomial" if self.shared else "Poisson-binomial"
        self.description = (f"closed form ({kind}, {count} vote count): b = -E[vote], "
                            f"S = N Diag(1 - P(tie) - E[vote]^2)")

    def vote(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(E v, P(v = 0))`` at the points ``x`` (runs, d)."""
        p = self.problem
        means = p.noise.sign_mean(p.landscape.grad(x), p.agents, p.batch)   # (runs, N, d)
        if self.shared:
            means = means[..., 0, :]
        return vote_moments(means, p.agents, self.shared)

    def evaluate(self, x: Tensor) -> tuple[Tensor, Covariance]:
        mean, tie = self.vote(x)
        var = torch.ones_like(mean).sub_(tie).addcmul_(mean, mean, value=-1.0)
        return mean.neg(), DiagonalCov(var.clamp_min_(0.0).mul_(self.problem.agents),
                                       nonnegative=True)

    def drift(self, x: Tensor) -> Tensor:
        return self.vote(x)[0].neg_()
