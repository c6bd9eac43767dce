"""DSignSGD's phases (THEORY.md §3): constants, labels and the three phase models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compsde import noise as noise_laws
from compsde.problem import Problem
from compsde.sde import simulate_sde
from compsde.sde.phases import (
    Phase3Model,
    phase2_constants,
    phase2_drift_bounds,
    phase_builder,
    phase_labels,
    phase_windows,
    sign_mean_function,
)
from compsde.simulation import simulate


def test_gaussian_phase2_constants_match_theory():
    c = phase2_constants(noise_laws.make("gaussian"))
    assert c["m"] == pytest.approx((math.erf(1.5) - math.erf(1.0)) / 0.5, abs=1e-12)
    assert c["m"] == pytest.approx(0.24681, abs=1e-5)
    assert c["q_minus"] == pytest.approx(0.59589, abs=1e-5)
    assert c["q_plus"] == pytest.approx(0.61448, abs=1e-5)
    assert c["y_tangent"] == pytest.approx(1.23285, abs=1e-4)


@pytest.mark.parametrize("spec", ["gaussian", "student-t:nu=3", "student-t:nu=1"])
def test_phase2_lines_sandwich_the_sign_mean(spec):
    law = noise_laws.make(spec)
    c = phase2_constants(law, 1.0, 1.5)
    y = torch.linspace(1.0, 1.5, 501, dtype=torch.float64)
    phi = sign_mean_function(law)(y)
    assert (c["m"] * y + c["q_minus"] <= phi + 1e-12).all()
    assert (phi <= c["m"] * y + c["q_plus"] + 1e-9).all()


def test_phase_labels_per_coordinate_and_agent():
    # Y = |∂f|/(√2 σ); quadratic H = I so ∂f = x. Agents with σ = 1 and σ = 2.
    p = Problem("dsignsgd", "quadratic:d=4", "gaussian:scale=1/2", lr=0.01, agents=2)
    s2 = math.sqrt(2)
    x = torch.tensor([[4.0 * s2, 2.5 * s2, 1.2 * s2, 0.5 * s2]], dtype=torch.float64)
    # agent 1: Y = 4, 2.5, 1.2, 0.5; agent 2: Y = 2, 1.25, 0.6, 0.25
    assert phase_labels(p, x).tolist() == [[1, 2, 2, 3]]
    assert phase_labels(p, x, low=0.4, high=1.1).tolist() == [[1, 1, 2, 2]]
    assert phase_labels(p, x, low=0.55, high=1.1).tolist() == [[1, 1, 2, 3]]
    with pytest.raises(ValueError, match="low < high"):
        phase_labels(p, x, low=2.0, high=1.0)


def test_phase_windows():
    labels = np.array([[1, 1], [1, 2], [2, 2], [3, 2], [3, 3]])
    times = np.arange(5.0)
    assert phase_windows(labels, times) == {1: (0.0, 0.0), 2: (2.0, 2.0), 3: (4.0, 4.0)}


@pytest.mark.parametrize("spec, ell", [("gaussian", 0.79788), ("student-t:nu=1", 0.63662),
                                       ("student-t:nu=2", 0.70711),
                                       ("student-t:nu=3", 0.73511)])
def test_phase3_drift_is_linear_with_ell(spec, ell):
    p = Problem("dsignsgd", "quadratic:eig=1/3", spec.replace("gaussian", "gaussian:scale=1/2")
                if spec == "gaussian" else spec + ",scale=1/2", lr=0.01, agents=2)
    model = Phase3Model(p)
    assert model.ell == pytest.approx(ell, abs=1e-5)
    x = torch.tensor([[0.2, -0.1]], dtype=torch.float64)
    drift, cov = model.evaluate(x, 0.01)
    grad = p.landscape.grad(x)
    torch.testing.assert_close(drift, -model.ell * grad * (1 + 0.5) / 2)   # mean_i 1/σ_i
    expected = 1 - model.ell**2 * grad**2 * (1 + 0.25) / 2
    torch.testing.assert_close(cov.diagonal(), expected)


def test_phase1_ode_moves_at_unit_speed():
    res = simulate_sde("dsignsgd", "quadratic:d=2", "gaussian", lr=0.01, steps=200, runs=1,
                       x0=5.0, model=phase_builder("phase1"))
    t = res.time
    np.testing.assert_allclose(res.loss_mean, (5.0 - t) ** 2, rtol=1e-10)   # ½·2·(5 − t)²
    assert res.config["model"] == "phase1-ode"


def test_phase2_drift_bounds_bracket_the_drift():
    p = Problem("dsignsgd", "quadratic:d=3", "gaussian:scale=1/1.2", lr=0.01, agents=2)
    x = torch.tensor([[1.75, 1.9, 2.1]], dtype=torch.float64)   # every Y_ij in [1, 1.5]
    assert (phase_labels(p, x) == 2).all()
    lo, hi = phase2_drift_bounds(p, x)
    drift = -p.noise.sign_mean(p.landscape.grad(x), 2).mean(-2)
    assert (lo <= drift.abs()).all() and (drift.abs() <= hi).all()


def test_phase3_sde_matches_the_stationary_loss():
    # THEORY.md §4: Phase-3 stationary E f ≈ η d σ_H / (4 ℓ N); the algorithm agrees.
    kw = dict(lr=0.02, steps=600, agents=4, runs=1000, record_every=10, x0=0.3)
    spec = ("dsignsgd", "quadratic:d=2", "gaussian:scale=1/2/3/4")
    alg = simulate(*spec, seed=0, **kw)
    p3 = simulate_sde(*spec, seed=1, model=phase_builder("phase3"), **kw)
    (a, se_a), (b, se_b) = alg.tail_mean(0.5), p3.tail_mean(0.5)
    assert abs(a - b) <= 4 * math.hypot(se_a, se_b)
    sigma_h = 4 / (1 + 1 / 2 + 1 / 3 + 1 / 4)
    formula = 0.02 * 2 * sigma_h / (4 * math.sqrt(2 / math.pi) * 4)
    assert b == pytest.approx(formula, rel=0.1)


def test_phase_models_need_dsignsgd():
    with pytest.raises(ValueError, match="method must be dsignsgd"):
        simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.01, steps=3,
                     model=phase_builder("phase3"))
    with pytest.raises(ValueError, match="model must be one of"):
        phase_builder("phase4")
