"""Message moments: closed forms (THEORY.md §3) against formulas, scipy and Monte-Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from compsde.problem import Problem
from compsde.sde import message_moments, sde_model
from compsde.sde.moments import MonteCarloMoments

X = torch.tensor([[0.3, -1.2, 2.0], [1.5, 0.0, -0.4]], dtype=torch.float64)


def problem(method: str, noise: str, agents: int = 3, landscape: str = "quadratic:eig=1/2/0.5",
            batch: int = 1) -> Problem:
    return Problem(method, landscape, noise, lr=0.01, agents=agents, batch=batch)


def test_dsignsgd_gaussian_drift_is_erf():
    p = problem("dsignsgd", "gaussian:scale=1/2/4", batch=4)
    drift, cov = message_moments(p).evaluate(X)
    grad = p.landscape.grad(X)
    sigmas = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64) / 2.0     # σ_i/√B
    m = torch.stack([torch.erf(grad / (math.sqrt(2) * s)) for s in sigmas], dim=-2)
    torch.testing.assert_close(drift, -m.mean(-2))
    torch.testing.assert_close(cov.diagonal(), 1 - (m * m).mean(-2))


@pytest.mark.parametrize("nu, closed", [
    (1.0, lambda y: 2 / math.pi * torch.atan(y)),
    (2.0, lambda y: y / torch.sqrt(2 + y * y)),
    (3.0, lambda y: 2 / math.pi * ((y / math.sqrt(3)) / (1 + y * y / 3)
                                   + torch.atan(y / math.sqrt(3)))),
    (2.5, lambda y: torch.from_numpy(2 * stats.t.cdf(y.numpy(), 2.5) - 1)),
    (7.0, lambda y: torch.from_numpy(2 * stats.t.cdf(y.numpy(), 7.0) - 1)),
])
def test_dsignsgd_student_t_drift_is_the_t_cdf(nu, closed):
    p = problem("dsignsgd", f"student-t:nu={nu},scale=1.5", agents=2)
    drift, cov = message_moments(p).evaluate(X)
    m = closed(p.landscape.grad(X) / 1.5)
    torch.testing.assert_close(drift, -m, atol=1e-12, rtol=0)
    torch.testing.assert_close(cov.diagonal(), 1 - m * m, atol=1e-12, rtol=0)


@pytest.mark.parametrize("noise", ["gaussian:scale=1/3", "student-t:nu=1,scale=0.7"])
def test_dsignsgd_drift_matches_monte_carlo(noise):
    p = problem("dsignsgd", noise, agents=2)
    samples = 20000
    gen = torch.Generator().manual_seed(3)
    grad = p.landscape.grad(X)
    z = p.noise.sample((samples, 2, 2, 3), gen)
    signs = torch.where(grad[None, :, None, :] + z >= 0, 1.0, -1.0).to(torch.float64)
    direction = signs.mean(-2)                                # the server's average
    drift, _ = message_moments(p).evaluate(X)
    se = direction.std(0) / math.sqrt(samples)
    assert ((direction.mean(0) + drift).abs() <= 5 * se + 1e-12).all()


def empirical_update_covariance(p: Problem, x: torch.Tensor, samples: int, seed: int):
    """Sample covariance of the server's direction mean_i m_i at a fixed point x (1, d)."""
    gen = torch.Generator().manual_seed(seed)
    grads = p.noise.sample((samples, p.agents, p.dim), gen).add_(p.landscape.grad(x))
    direction = p.method.direction(grads, gen)                # (samples, d)
    centred = direction - direction.mean(0)
    cov = centred.T @ centred / (samples - 1)
    var = torch.diagonal(cov)
    se = torch.sqrt((var[:, None] * var[None, :] + cov * cov) / samples)
    return direction.mean(0), cov, se


@pytest.mark.parametrize("method", ["dsgd", "dcsgd:randk:k=2", "dcsgd:bernoulli:p=0.3"])
def test_covariance_matches_the_empirical_update_covariance(method):
    # Cov[mean_i m_i] = S / N  (THEORY.md §3), Rand-k's off-diagonal term included.
    p = problem(method, "gaussian:scale=0.8", agents=2, landscape="quadratic:eig=1/2/3/4/5")
    x = torch.tensor([[1.0, -0.5, 0.8, 0.3, -1.1]], dtype=torch.float64)
    mean, cov, se = empirical_update_covariance(p, x, 40000, seed=11)
    drift, s = message_moments(p).evaluate(x)
    model = s.dense()[0] / p.agents
    assert ((cov - model).abs() <= 5 * se).all(), (cov - model) / se
    assert ((mean + drift[0]).abs() <= 5 * torch.sqrt(torch.diagonal(cov) / 40000)).all()
    if "randk" in method:
        off = ~torch.eye(5, dtype=torch.bool)
        assert (model[off] != 0).any()                        # the rank-one term is there


def test_randk_diffusion_is_diag_plus_rank_one_without_dense_matrices():
    p = problem("dcsgd:randk:ratio=0.01", "gaussian", agents=4, landscape="quadratic:d=2000")
    x = torch.randn(3, 2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = message_moments(p)
    assert "rank one" in m.description
    _, cov = m.evaluate(x)
    z = torch.randn(3, cov.noise_dim, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    assert cov.apply(z).shape == (3, 2000)


def test_qsgd_moments_are_monte_carlo_and_say_so():
    p = problem("dcsgd:qsgd:levels=2", "gaussian:scale=0.8", agents=2,
                landscape="quadratic:eig=1/2/3")
    m = message_moments(p, samples=4000, generator=torch.Generator().manual_seed(5))
    assert "monte-carlo" in m.description
    x = torch.tensor([[1.0, -0.5, 0.8]], dtype=torch.float64)
    _, cov, se = empirical_update_covariance(p, x, 40000, seed=12)
    model = m.evaluate(x)[1].dense()[0] / p.agents
    # both sides are estimates: the moments' own error is ~1/√4000 of Φ
    diag_tol = 5 * torch.diagonal(se) + 5 * torch.diagonal(model) / math.sqrt(4000)
    assert ((torch.diagonal(cov) - torch.diagonal(model)).abs() <= diag_tol).all()


@pytest.mark.parametrize("method", ["dsgd", "dsignsgd"])
def test_monte_carlo_fallback_matches_closed_forms(method):
    p = problem(method, "gaussian:scale=1", agents=2)
    mc = message_moments(p, mode="monte-carlo", samples=20000,
                         generator=torch.Generator().manual_seed(2))
    assert isinstance(mc, MonteCarloMoments) and "monte-carlo" in mc.description
    drift_mc, cov_mc = mc.evaluate(X)
    drift, cov = message_moments(p).evaluate(X)
    scale = cov.diagonal().sqrt()
    assert ((drift_mc - drift).abs() <= 5 * scale / math.sqrt(2 * 20000)).all()
    rel = (cov_mc.diagonal() - cov.diagonal()).abs() / cov.diagonal().clamp_min(1e-3)
    assert (rel <= 5 * math.sqrt(2 / 40000) + 1e-9).all()


@pytest.mark.parametrize("method", ["dsgd", "dcsgd:randk:k=1"])
@pytest.mark.parametrize("nu", [1.0, 2.0, 1.5])
def test_no_sde_without_a_noise_covariance(method, nu):
    p = problem(method, f"student-t:nu={nu}")
    with pytest.raises(ValueError, match="covariance of the gradient noise does not exist"):
        message_moments(p)
    with pytest.raises(ValueError, match="nu <= 2"):
        sde_model(p, moments="monte-carlo")


def test_dsignsgd_has_an_sde_for_every_nu():
    for nu in (0.5, 1.0, 2.0):
        drift, cov = message_moments(problem("dsignsgd", f"student-t:nu={nu}")).evaluate(X)
        assert torch.isfinite(drift).all() and (drift.abs() <= 1).all()
        assert ((cov.diagonal() >= 0) & (cov.diagonal() <= 1)).all()


def test_bad_modes():
    with pytest.raises(ValueError, match="moments must be one of"):
        message_moments(problem("dsgd", "gaussian"), mode="exact")
    with pytest.raises(ValueError, match="closed-form"):
        message_moments(problem("dcsgd:natural", "gaussian"), mode="closed-form")
    with pytest.raises(ValueError, match="stability"):
        sde_model(problem("dsgd", "gaussian"), moments="monte-carlo", stability=True)
