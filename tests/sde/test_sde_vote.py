"""The majority vote's moments (compsde.sde.vote) against the binomial formula and Monte-Carlo.

E v = sign(∂f)(2·P[Bin(N, p) > N/2] − 1 + P[Bin(N, p) = N/2]) (the last term for even N only),
E v² = 1 − P[Bin(N, p) = N/2]; THEORY.md §8. Monte-Carlo tolerances are 5 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from compsde.methods import majority_vote
from compsde.problem import Problem
from compsde.sde import message_moments, simulate_sde
from compsde.sde.vote import MajorityVoteMoments, count_distribution, vote_moments


def binomial_vote(p: float, agents: int) -> tuple[float, float]:
    """(E v, P tie) for ∂f > 0 from the binomial formula with p = P(sign g_i = sign ∂f)."""
    pmf = [math.comb(agents, k) * p**k * (1 - p) ** (agents - k) for k in range(agents + 1)]
    above = sum(pmf[k] for k in range(agents + 1) if 2 * k > agents)
    tie = pmf[agents // 2] if agents % 2 == 0 else 0.0
    return 2 * above - 1 + tie, tie


@pytest.mark.parametrize("agents", [2, 3, 4, 5, 8])
def test_binomial_moments_match_the_formula(agents):
    p = torch.tensor([0.0, 0.1, 0.5, 0.62, 0.9, 1.0], dtype=torch.float64)
    mean, tie = vote_moments(2 * p - 1, agents, shared=True)
    for j, pj in enumerate(p.tolist()):
        expect_mean, expect_tie = binomial_vote(pj, agents)
        assert mean[j].item() == pytest.approx(expect_mean, abs=1e-12)
        assert tie[j].item() == pytest.approx(expect_tie, abs=1e-12)


def test_poisson_binomial_reduces_to_the_binomial_and_sums_to_one():
    q = torch.tensor([[0.3, 0.8, 0.55]], dtype=torch.float64)                 # (1, d)
    shared = count_distribution(q, 5, shared=True)
    hetero = count_distribution(q.unsqueeze(-2).expand(1, 5, 3), 5, shared=False)
    torch.testing.assert_close(shared, hetero, rtol=0, atol=1e-14)
    q_i = torch.tensor([[[0.1], [0.9], [0.4], [0.7]]], dtype=torch.float64)   # (1, 4, 1)
    dist = count_distribution(q_i, 4, shared=False)
    assert dist.sum().item() == pytest.approx(1.0, abs=1e-14)
    # P(K = 0) and P(K = 4) by hand
    assert dist[0, 0, 0].item() == pytest.approx(0.9 * 0.1 * 0.6 * 0.3, abs=1e-15)
    assert dist[0, 0, 4].item() == pytest.approx(0.1 * 0.9 * 0.4 * 0.7, abs=1e-15)


@pytest.mark.parametrize(("agents", "noise"), [(3, "gaussian:scale=1"), (4, "gaussian:scale=1"),
                                               (5, "student-t:nu=1.5,scale=0.5/1/2/1/3"),
                                               (6, "gaussian:scale=1/2/1/2/1/2")])
def test_drift_and_variance_match_monte_carlo(agents, noise):
    problem = Problem("dsignsgd:vote=majority", "quadratic:d=3", noise, lr=0.1, agents=agents)
    moments = message_moments(problem)
    assert isinstance(moments, MajorityVoteMoments)
    x = torch.tensor([[0.3, -0.8, 0.05], [1.5, 0.0, -0.2]], dtype=torch.float64)
    drift, cov = moments.evaluate(x)
    samples = 200_000
    gen = torch.Generator().manual_seed(11)
    g = problem.noise.sample((samples, 2, agents, 3), gen, 1, dtype=torch.float64,
                             device="cpu").add_(problem.landscape.grad(x).unsqueeze(-2))
    votes = majority_vote(g)                                                 # (M, 2, 3)
    mc_mean, mc_var = votes.mean(0), votes.var(0, correction=0)
    se_mean = (mc_var / samples).sqrt()
    assert ((-drift - mc_mean).abs() <= 5 * se_mean + 1e-12).all()
    var = cov.diagonal() / agents                 # S = N · Var v in front of η/N
    fourth = ((votes - mc_mean) ** 4).mean(0)
    se_var = ((fourth - mc_var**2).clamp_min(0) / samples).sqrt()
    # the sample variance's own error, plus (μ̂ − μ)² ≤ (5 se_mean)², its second-order bias
    assert ((var - mc_var).abs() <= 5 * se_var + 25 * se_mean**2 + 1e-12).all()
    if agents % 2 == 0:      # ties happen: E v² < 1
        assert (cov.diagonal() / agents + drift**2 < 1 - 1e-3).any()


def test_vote_is_stronger_than_the_mean_of_signs():
    """For N odd ≥ 3 and p ∈ (1/2, 1): 2·P[Bin > N/2] − 1 > 2p − 1 (the vote amplifies)."""
    m = torch.tensor([0.05, 0.3, 0.7], dtype=torch.float64)
    mean, _ = vote_moments(m, 5, shared=True)
    assert (mean > m).all()


def test_stateful_and_sampled_vote_models_are_refused():
    with pytest.raises(ValueError, match="no SDE for ef-signsgd"):
        simulate_sde("ef-signsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=2, agents=2)
    problem = Problem("dsignsgd:vote=majority", "quadratic:d=2", "gaussian", lr=0.1, agents=3)
    with pytest.raises(ValueError, match="monte-carlo"):
        message_moments(problem, "monte-carlo")
