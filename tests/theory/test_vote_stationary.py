"""The majority vote's stationary loss: the exact lattice chain against the simulator, and the
Phase-3 level against the chain (THEORY.md §8a)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compsde.simulation import simulate
from compsde.theory.model import QuadraticModel
from compsde.theory.vote import vote_gain, vote_phase3_level, vote_stationary_loss, vote_tie


def model(agents: int, lr: float, d: int = 4, sigma=1.0, nu=None) -> QuadraticModel:
    scales = np.broadcast_to(np.asarray(sigma, dtype=float).reshape(-1, 1), (agents, d))
    return QuadraticModel("dsignsgd", np.ones(d), scales, lr, np.full(d, 1.0), nu=nu)


def test_gain_and_tie_against_the_binomial_by_finite_differences():
    for n in range(1, 9):
        def mean_vote(p: float, n: int = n) -> float:
            probs = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
            return sum(probs[k] for k in range(n + 1) if 2 * k > n) - sum(
                probs[k] for k in range(n + 1) if 2 * k < n)
        h = 1e-6
        slope = (mean_vote(0.5 + h) - mean_vote(0.5 - h)) / (2 * h)
        assert vote_gain(n) == pytest.approx(slope / 2, rel=1e-6)
        tie = math.comb(n, n // 2) / 2**n if n % 2 == 0 else 0.0
        assert vote_tie(n) == pytest.approx(tie)
    assert vote_gain(3) == 1.5 and vote_gain(1) == 1.0


@pytest.mark.parametrize(("agents", "noise", "nu"), [
    (3, "gaussian:scale=1", None), (4, "gaussian:scale=1", None),
    (5, "student-t:nu=2,scale=1", 2.0)])
def test_the_exact_chain_is_the_simulated_stationary_loss(agents, noise, nu):
    """Independent runs at step 2500 (≥ 50 relaxation times of ηc_Nℓλ/σ per step): the mean
    loss is the chain's within 4 se."""
    lr = 0.02
    exact = vote_stationary_loss(model(agents, lr, nu=nu))
    result = simulate("dsignsgd:vote=majority", "quadratic:d=4", noise, lr=lr, agents=agents,
                      steps=2500, runs=1000, seed=5, x0=1.0)
    final = result.losses[-1]
    se = final.std() / math.sqrt(final.size)
    assert abs(final.mean() - exact) <= 4 * se


def test_phase3_level_approaches_the_chain_and_loses_to_the_mean_of_signs():
    for agents in (3, 4, 7):
        exact = vote_stationary_loss(model(agents, 0.005))
        level = vote_stationary_loss(model(agents, 0.005), "phase3")
        assert level == pytest.approx(exact, rel=0.02)
        # the mean of signs' Phase-3 level η d σ/(4ℓN): the vote sits N(1 − P_tie)/c_N above
        mean_of_signs = 0.005 * 4 / (4 * math.sqrt(2 / math.pi) * agents)
        ratio = agents * (1 - vote_tie(agents)) / vote_gain(agents)
        assert level / mean_of_signs == pytest.approx(ratio)
        assert ratio > 1
    assert vote_phase3_level(0.01, np.ones(3), 3) == pytest.approx(
        0.01 * 3 / (4 * 1.5 * math.sqrt(2 / math.pi)))


def test_refusals():
    with pytest.raises(ValueError, match="agents"):
        vote_stationary_loss(model(1, 0.01))
    unequal = model(3, 0.01, sigma=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"i\.i\.d\."):
        vote_stationary_loss(unequal, "phase3")
    with pytest.raises(ValueError, match="kind"):
        vote_stationary_loss(model(3, 0.01), "sde")
