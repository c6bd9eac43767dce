"""SDE vs algorithm: mean-curve comparison and the weak error's order in lr (THEORY.md §3, §4)."""

from __future__ import annotations

import numpy as np
import pytest

from compsde.recording import RunResult
from compsde.sde import simulate_sde
from compsde.validate import compare_curves, fit_slope, lr_sweep, validate

LRS = [0.2, 0.1, 0.05, 0.025]


def exact_dsgd_loss(lr: float, horizon: float, lam: np.ndarray, sigma2: float, agents: int,
                    x0: float) -> float:
    """E f(x_K), K = horizon/lr, of DSGD on ½Σλ_j x_j² with Gaussian noise, exactly (§4):
    E x²_{k+1} = (1 − ηλ)² E x²_k + η² σ̄²/N."""
    m = np.full(lam.shape, x0**2)
    for _ in range(round(horizon / lr)):
        m = (1 - lr * lam) ** 2 * m + lr**2 * sigma2 / agents
    return float(0.5 * (lam * m).sum())


def test_dsgd_weak_error_is_first_order_in_lr():
    # The algorithm's side is exact (no Monte-Carlo error); the SDE side is our integrator with
    # dt = lr/8 and 20 000 paths, whose standard error is far below the O(lr) bias.
    lam, sigma2, agents, x0, horizon = np.array([1.0, 2.0]), 0.25, 2, 1.0, 1.0
    errors, ses = [], []
    for lr in LRS:
        steps = round(horizon / lr)
        sde = simulate_sde("dsgd", "quadratic:eig=1/2", "gaussian:scale=0.5", lr=lr,
                           steps=steps, agents=agents, runs=20_000, x0=x0, dt=lr / 8,
                           record_every=steps, seed=1)
        exact = exact_dsgd_loss(lr, horizon, lam, sigma2, agents, x0)
        errors.append(abs(exact - sde.loss_mean[-1]))
        ses.append(sde.loss_se[-1])
    errors, ses = np.array(errors), np.array(ses)
    assert (errors > 5 * ses).all(), errors / ses            # bias resolved at every lr
    slope, _ = fit_slope(np.array(LRS), errors)
    assert 0.7 <= slope <= 1.3, slope


def test_dsignsgd_weak_error_is_first_order_in_lr():
    # Monte-Carlo on both sides; x0 = 2, σ = 1 starts in Phase 2 where erf is curved.
    sweep = lr_sweep("dsignsgd", "quadratic:d=1", "gaussian:scale=1", lrs=LRS, horizon=1.0,
                     runs=50_000, substeps=4, agents=2, x0=2.0, seed=0)
    assert sweep.resolved.all(), sweep.errors / sweep.se
    assert 0.7 <= sweep.slope <= 1.3, sweep.slope
    assert sweep.to_dict()["substeps"] == 4


def fake(mean, se) -> RunResult:
    result = RunResult(steps=np.arange(3), time=np.arange(3.0),
                       losses=np.zeros((3, 2)), config={})
    result.loss_mean, result.loss_se = np.array(mean, float), np.array(se, float)
    return result


def test_compare_curves():
    a = fake([1.0, 0.5, 0.2], [0.0, 0.01, 0.01])
    b = fake([1.0, 0.52, 0.21], [0.0, 0.01, 0.01])
    stats = compare_curves(a, b, z=4)
    assert stats["agree"] and stats["max_z"] == pytest.approx(0.02 / np.sqrt(2e-4))
    assert stats["max_relative_gap"] == pytest.approx(0.05)
    assert not compare_curves(a, fake([1.0, 0.7, 0.2], [0, 0.01, 0.01]))["agree"]
    with pytest.raises(ValueError, match="same records"):
        compare_curves(a, fake([1.0], [0.0]))


def test_validate_reports_both_curves():
    check = validate("dsignsgd", "quadratic:d=2", "gaussian", lr=0.02, steps=100, runs=400,
                     agents=2, record_every=10)
    out = check.to_dict()
    assert check.verdict == "pass"
    for key in ("algorithm", "sde"):
        assert {"loss_mean", "loss_se", "ci_low", "ci_high"} <= set(out[key])
    assert out["max_relative_gap"] >= 0 and out["config"]["kind"] == "validation"


def test_lr_sweep_bad_input():
    with pytest.raises(ValueError, match="at least 2 distinct"):
        lr_sweep("dsgd", "quadratic:d=1", "gaussian", lrs=[0.1, 0.1], horizon=1.0)
    with pytest.raises(ValueError, match="lrs must be"):
        lr_sweep("dsgd", "quadratic:d=1", "gaussian", lrs=[0.1, -0.1], horizon=1.0)
    with pytest.raises(ValueError, match="horizon must be"):
        lr_sweep("dsgd", "quadratic:d=1", "gaussian", lrs=[0.1, 0.05], horizon=0.0)
