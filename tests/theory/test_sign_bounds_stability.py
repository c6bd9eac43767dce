"""DSignSGD's exact lattice recursion, the bounds over time and the stability limits (§3–4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compsde import simulate
from compsde.theory import (
    QuadraticModel,
    check_stable,
    dsignsgd_phase_bound,
    linear_speedup,
    loss_curve,
    pl_bound_for,
    stability_limit,
    stationary_loss,
)


def _run(method, landscape, noise, *, lr, agents, steps, runs, seed, x0=1.0, record_every=10,
         batch=1):
    result = simulate(method, landscape, noise, lr=lr, steps=steps, agents=agents, batch=batch,
                      runs=runs, seed=seed, x0=x0, record_every=record_every)
    model = QuadraticModel.from_problem(method, landscape, noise, lr=lr, agents=agents,
                                        batch=batch, x0=x0)
    return result, model


SIGN_CASES = [
    ("quadratic:d=3,eig=0.5:2", "gaussian:scale=1/2/3", 3, 0.02, 2.0),
    ("quadratic:d=2,eig=1:2", "student-t:nu=1,scale=0.5/2", 2, 0.02, 1.5),
    ("quadratic:d=2", "student-t:nu=2.5,scale=1", 8, 0.01, 1.0),
]


@pytest.mark.parametrize("landscape, noise, agents, lr, x0", SIGN_CASES)
def test_dsignsgd_lattice_recursion_is_exact(landscape, noise, agents, lr, x0):
    result, model = _run("dsignsgd", landscape, noise, lr=lr, agents=agents, steps=1500,
                         runs=400, seed=7, x0=x0, record_every=15)
    exact = loss_curve(model, result.steps, "discrete")
    assert exact.lost_mass < 1e-9
    z = np.abs(result.loss_mean - exact.loss)[1:] / result.loss_se[1:]
    assert z.max() <= 5.0, (z.max(), int(z.argmax()))
    level, se = result.tail_mean(0.3)
    stationary = stationary_loss(model, "discrete")
    assert abs(level - stationary) <= 4 * se
    phase3 = stationary_loss(model, "sde")        # §4 Phase-3 formula, with its model error
    assert abs(level - phase3) <= 4 * se + abs(stationary - phase3)


def test_dsignsgd_phase3_formula_matches_theory_check():
    """THEORY.md's own check: d=4, N=4, σ_i ∈ {1,2,3,4}, η=0.002 → ≈ 0.001203."""
    model = QuadraticModel("dsignsgd", np.ones(4), np.array([1.0, 2, 3, 4]), 0.002, np.ones(4))
    sde, exact = stationary_loss(model, "sde"), stationary_loss(model, "discrete")
    assert sde == pytest.approx(0.001203, rel=2e-3)
    assert exact == pytest.approx(sde, rel=0.01)


def test_phase_bound_dominates_through_all_phases():
    """Heterogeneous σ_i, spread eigenvalues, start deep in Phase 1 (§3)."""
    result, model = _run("dsignsgd", "quadratic:d=3,eig=0.5:2", "gaussian:scale=1/2/3",
                         lr=0.02, agents=3, steps=2000, runs=400, seed=9, x0=15.0, record_every=10)
    bound = dsignsgd_phase_bound(model, result.steps)
    assert set(bound.phase.tolist()) == {1, 2, 3}
    assert np.all(bound.bound >= result.loss_mean - 4 * result.loss_se)
    exact = loss_curve(model, result.steps, "discrete").loss
    assert np.all(bound.bound >= exact)
    for closed in (bound.phase1, bound.phase3):
        shown = np.isfinite(closed)
        assert shown.any() and np.all(closed[shown] >= exact[shown])
    # the bound is tight in Phase 1 and within the chord factor ℓ/c₃ ≈ 1.34 at stationarity
    assert bound.bound[-1] / exact[-1] < 1.6


@pytest.mark.parametrize("noise", ["student-t:nu=1,scale=1", "student-t:nu=4,scale=0.5/2"])
def test_phase_bound_dominates_exact_curve_under_heavy_tails(noise):
    model = QuadraticModel.from_problem("dsignsgd", "quadratic:d=2,eig=1:3", noise, lr=0.02,
                                        agents=2, x0=5.0)
    steps = np.arange(0, 1601, 4)
    bound = dsignsgd_phase_bound(model, steps)
    assert np.all(bound.bound >= loss_curve(model, steps, "discrete").loss)


PL_CASES = [
    ("dsgd", "quadratic:d=4,eig=0.5:2", "gaussian:scale=1/3", 2, 0.1, 2.0),
    ("dcsgd:randk:k=1", "quadratic:d=4,eig=0.5:2", "gaussian:scale=1/2/3", 3, 0.05, 2.0),
    ("dsignsgd", "quadratic:d=3,eig=0.5:2", "gaussian:scale=1/2", 2, 0.02, 0.5),
]


@pytest.mark.parametrize("method, landscape, noise, agents, lr, x0", PL_CASES)
def test_pl_bounds_stay_above_the_simulated_mean(method, landscape, noise, agents, lr, x0):
    result, model = _run(method, landscape, noise, lr=lr, agents=agents, steps=1200, runs=300,
                         seed=4, x0=x0, record_every=10)
    bound = pl_bound_for(model, result.steps, "discrete")
    assert np.all(bound.bound >= result.loss_mean - 4 * result.loss_se)
    assert np.all(bound.bound >= loss_curve(model, result.steps, "discrete").loss * (1 - 1e-9))
    if method != "dsignsgd":   # the SDE bound against the exact SDE curve
        sde = pl_bound_for(model, result.steps, "sde").bound
        assert np.all(sde >= loss_curve(model, result.steps, "sde").loss * (1 - 1e-9))


def test_stability_limits():
    assert stability_limit("dcsgd", agents=8, L=2.0, omega=9.0) == pytest.approx(16 / 34)
    assert stability_limit("dcsgd", agents=8, L=2.0, omega=9.0, kind="sde") == pytest.approx(
        16 / 18)
    assert stability_limit("dsgd", agents=8, L=2.0) == pytest.approx(1.0)
    assert math.isinf(stability_limit("dsignsgd", agents=1, L=5.0))
    with pytest.raises(ValueError, match=r"lr must be < 0\.4706.*2N/\(\(N \+ ω\)·L\)"):
        check_stable("dcsgd", 0.5, agents=8, L=2.0, omega=9.0)


def test_discrete_limit_is_the_real_one():
    """ω = 9, N = 1, λ = 1: SDE limit 2/9 ≈ 0.222, discrete 0.2; lr 0.21 diverges, 0.19 settles."""
    kw = dict(steps=1500, agents=1, runs=100, seed=2, record_every=50)
    unstable = simulate("dcsgd:randk:k=1", "quadratic:d=10", "gaussian:scale=1", lr=0.21, **kw)
    stable = simulate("dcsgd:randk:k=1", "quadratic:d=10", "gaussian:scale=1", lr=0.19, **kw)
    assert 0.19 < stability_limit("dcsgd", agents=1, L=1.0, omega=9.0) < 0.21 < \
        stability_limit("dcsgd", agents=1, L=1.0, omega=9.0, kind="sde")
    assert unstable.loss_mean[-1] > 100 * unstable.loss_mean[0] or unstable.diverged_fraction > 0
    level, se = stable.tail_mean(0.5)          # settles, at the (high) exact level ≈ 95
    model = QuadraticModel.from_problem("dcsgd:randk:k=1", "quadratic:d=10", "gaussian:scale=1",
                                        lr=0.19, agents=1)
    assert stable.diverged_fraction == 0
    assert abs(level - stationary_loss(model)) <= 4 * se


def test_linear_speedup_predictions():
    model = QuadraticModel.from_problem("dsignsgd", "quadratic:d=4", "gaussian:scale=1/2",
                                        lr=0.01, agents=2)
    agents = [2, 4, 8, 16]
    sde = linear_speedup(model, agents, "sde")
    assert np.allclose(sde * np.array(agents), sde[0] * 2, rtol=0.02)
    dsgd = model.replace(method="dsgd")
    exact = linear_speedup(dsgd, agents, "discrete")
    assert np.allclose(exact * np.array(agents), exact[0] * 2, rtol=1e-12)
