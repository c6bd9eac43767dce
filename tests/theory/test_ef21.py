"""EF21's exact second moments on a diagonal quadratic (THEORY.md §8b) against Monte-Carlo."""

from __future__ import annotations

import numpy as np
import pytest

from compsde.simulation import simulate
from compsde.theory import QuadraticModel, stationary_loss
from compsde.theory.ef21 import EF21Quadratic, keep_probability

K = 4.0                                  # standard errors (THEORY.md §10)
LAND, NOISE = "quadratic:eig=0.5/1/2/3", "gaussian:scale=1/2/3"   # heterogeneous σ_i
CONFIG = dict(lr=0.05, agents=3, batch=4, x0=1.0)


def test_one_agent_identity_is_sgd_stationary_loss():
    """N = 1, C' = identity: h = g, so x' = x − η g: E f = η σ²/(4B) Σ_j (1 − ηλ_j/2)^{-1}
    (THEORY.md §4, exact discrete DSGD)."""
    lam, sigma, batch, eta = np.array([0.5, 1.0, 2.0]), 1.5, 4, 0.1
    model = EF21Quadratic(lam, sigma**2 / batch, 1.0, eta, 1.0)
    expected = eta * sigma**2 / (4 * batch) * np.sum(1.0 / (1.0 - eta * lam / 2))
    assert model.stationary_loss() == pytest.approx(expected, rel=1e-12)


def test_identity_at_many_agents_is_dsgd_closed_form():
    """ef21:identity is DSGD bitwise (h_i = g_i): the same stationary loss as §4's recursion."""
    ef = EF21Quadratic.from_problem("ef21:identity", LAND, NOISE, **CONFIG)
    dsgd = QuadraticModel.from_problem("dsgd", LAND, NOISE, **CONFIG)
    assert ef.stationary_loss() == pytest.approx(stationary_loss(dsgd), rel=1e-10)


def test_first_step_by_hand():
    """One step from (x0, h = 0) with q = 1, N = 1: E x1² = (1 − ηλ)² x0² + η² σ²."""
    model = EF21Quadratic([2.0], [[0.3]], [[1.0]], 0.1, 1.5)
    expected = 0.5 * 2.0 * ((1 - 0.2) ** 2 * 1.5**2 + 0.01 * 0.3)
    assert model.loss_curve([1])[0] == pytest.approx(expected, rel=1e-12)


def test_keep_probabilities():
    from compsde import compressors
    assert keep_probability(compressors.make("identity"), 4) == 1.0
    assert keep_probability(compressors.make("randk:k=1"), 4) == 0.25
    assert keep_probability(compressors.make("bernoulli:p=0.3"), 4) == 0.3


def test_lyapunov_solve_equals_dense_solve_and_stability_agrees():
    """Stationary M from N Lyapunov solves + Woodbury equals the dense (I − K)⁻¹ solve; the
    stability criterion ρ(Ā) < 1, ρ(VG) < 1 agrees with ρ(K) < 1 across the limit."""
    keep = np.array([[0.25], [0.5], [1.0]])
    for eta in (0.05, 0.3, 0.6, 0.9, 1.2):
        model = EF21Quadratic([0.5, 1.0, 2.0, 3.0], [[1.0], [4.0], [0.25]], keep, eta, 1.0)
        radius = model.mean_square_radius()
        assert np.array_equal(model.stable(), radius < 1)
        if not (radius < 1).all():
            assert model.stationary_loss() == np.inf
            continue
        rows, inverse = model._distinct(False)
        _, c, _, _, _, noise = model._pieces(rows)
        n = c.shape[0]
        const = np.einsum("ai,ji,bi->jab", c, noise, c).reshape(len(rows), -1, 1)
        dense = np.linalg.solve(np.eye(n * n) - model.kronecker(), const)
        assert np.allclose(dense.reshape(-1, n, n)[inverse], model.stationary_moments(),
                           rtol=1e-10, atol=1e-14)
        curve = model.loss_curve([20_000])
        assert curve[0] == pytest.approx(model.stationary_loss(), rel=1e-8)
    assert {bool(EF21Quadratic([3.0], [[1.0], [4.0], [0.25]], keep, eta, 1.0).stable().all())
            for eta in (0.05, 1.2)} == {True, False}


@pytest.mark.parametrize("spec", ["topk:k=1", "scaledsign", "qsgd:levels=2"])
def test_non_mask_compressors_are_refused(spec):
    with pytest.raises(ValueError, match="no closed form is derived"):
        EF21Quadratic.from_problem(f"ef21:{spec}", "quadratic:d=4", "gaussian", lr=0.05)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="finite variance"):
        EF21Quadratic.from_problem("ef21:identity", "quadratic:d=4", "student-t:nu=2",
                                   lr=0.05)
    with pytest.raises(ValueError, match="method must be ef21"):
        EF21Quadratic.from_problem("dsgd", "quadratic:d=4", "gaussian", lr=0.05)
    with pytest.raises(ValueError, match="keep must be probabilities"):
        EF21Quadratic([1.0], 1.0, 0.0, 0.1, 1.0)


@pytest.mark.parametrize("method,noise,seed", [
    ("ef21:identity", NOISE, 1),
    ("ef21:randk:k=1", NOISE, 2),
    ("ef21:bernoulli:p=0.25", NOISE, 3),
    ("ef21:bernoulli:p=0.25", "student-t:nu=5,scale=1/2/3", 4),   # variance ν/(ν−2) s²
])
def test_monte_carlo_transient_and_stationary(method, noise, seed):
    """The simulator's mean loss at every record within 4·se of the exact E f_k, and the mean
    over the last half (se from the per-run time averages: independent runs, so the
    autocorrelation within a run is accounted for) within 4·se of the window's exact mean,
    which is itself the stationary level to 1e-6 there."""
    steps, runs = 800, 1000
    result = simulate(method, LAND, noise, steps=steps, runs=runs, seed=seed,
                      record_every=20, **CONFIG)
    model = EF21Quadratic.from_problem(method, LAND, noise, **CONFIG)
    exact = model.loss_curve(result.steps)
    gap = np.abs(result.loss_mean - exact)[1:]
    assert (gap <= K * result.loss_se[1:]).all(), np.max(gap / result.loss_se[1:])
    start = int(len(result.steps) * 0.5)
    window = exact[start:]
    level = model.stationary_loss()
    assert np.max(np.abs(window - level)) <= 1e-6 * level
    mean, se = result.tail_mean(0.5)
    assert abs(mean - window.mean()) <= K * se



def test_heterogeneous_keep_probabilities_against_direct_monte_carlo():
    """Per-agent q_i (0.25, 0.5, 1) and σ_i: the recursion h_i ← (1 − s_i) h_i + s_i g_i,
    x ← x − η mean_i h_i run directly (EF21's method takes one compressor for all agents),
    against the exact E f_k at every record and the stationary level, 4·se."""
    import torch

    lam = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    keep = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    sigma = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) / 2.0      # σ_i/√B, B = 4
    eta, runs, steps, every = 0.05, 2000, 600, 20
    gen = torch.Generator().manual_seed(7)
    x = torch.ones(runs, 4, dtype=torch.float64)
    h = torch.zeros(runs, 3, 4, dtype=torch.float64)
    losses = []
    for k in range(steps + 1):
        if k % every == 0:
            losses.append((0.5 * lam * x * x).sum(-1))
        g = lam * x[:, None, :] + sigma[:, None] * torch.randn(h.shape, generator=gen,
                                                               dtype=torch.float64)
        s = (torch.rand(h.shape, generator=gen, dtype=torch.float64) < keep[:, None]).double()
        h = (1 - s) * h + s * g
        x = x - eta * h.mean(1)
    loss = torch.stack(losses).numpy()                                   # (records, runs)
    model = EF21Quadratic(lam.numpy(), (sigma**2).numpy(), keep.numpy(), eta, 1.0)
    exact = model.loss_curve(np.arange(0, steps + 1, every))
    mean, se = loss.mean(1), loss.std(1, ddof=1) / np.sqrt(runs)
    assert (np.abs(mean - exact)[1:] <= K * se[1:]).all()
    per_run = loss[len(loss) // 2:].mean(0)                             # batch means per run
    assert abs(per_run.mean() - model.stationary_loss()) <= K * per_run.std(ddof=1) / np.sqrt(runs)
