"""Exact expected-loss curves and stationary levels against the simulated algorithm (§4).

Tolerances: time-averaged tails compare within 4·se (se over runs of per-run time averages);
per-record curves within 5·se (about 100 records each); the SDE versions additionally get the
model error |exact discrete − SDE| computed from the closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compsde import compressors, methods, simulate
from compsde.landscapes import Quadratic
from compsde.theory import QuadraticModel, loss_curve, moment_curve, stationary_loss


def _run(method, landscape, noise, *, lr, agents, steps, runs, seed, batch=1, x0=1.0,
         record_every=10):
    result = simulate(method, landscape, noise, lr=lr, steps=steps, agents=agents, batch=batch,
                      runs=runs, seed=seed, x0=x0, record_every=record_every)
    model = QuadraticModel.from_problem(method, landscape, noise, lr=lr, agents=agents,
                                        batch=batch, x0=x0)
    return result, model


def _tail(curve: np.ndarray, fraction: float = 0.5) -> float:
    return float(np.mean(curve[int(len(curve) * (1.0 - fraction)):]))


def _check_curve(result, model, *, per_record: bool = True) -> None:
    exact = loss_curve(model, result.steps, "discrete").loss
    sde = loss_curve(model, result.steps, "sde").loss
    level, se = result.tail_mean(0.5)
    assert abs(level - _tail(exact)) <= 4 * se, (level, se, _tail(exact))
    model_error = abs(_tail(exact) - _tail(sde))
    assert abs(level - _tail(sde)) <= 4 * se + model_error
    if per_record:
        z = np.abs(result.loss_mean - exact)[1:] / result.loss_se[1:]
        assert z.max() <= 5.0, (z.max(), int(z.argmax()))


CASES = [
    # method, landscape, noise, agents, lr, batch  (heterogeneous σ_i, several N, ω up to 9)
    ("dsgd", "quadratic:d=5,eig=0.5:4", "gaussian:scale=1/2/3/4", 4, 0.05, 1),
    ("dsgd", "quadratic:d=3", "student-t:nu=5,scale=2", 8, 0.05, 4),
    ("dcsgd:randk:k=1", "quadratic:d=10,eig=0.5:2", "gaussian:scale=0.5/1/2/4", 4, 0.05, 1),
    ("dcsgd:bernoulli:p=0.1", "quadratic:d=4,eig=0.5:2", "gaussian:scale=1", 1, 0.05, 2),
    ("dcsgd:bernoulli:p=0.5", "quadratic:d=6,eig=1:3", "student-t:nu=6,scale=1", 16, 0.1, 1),
]


@pytest.mark.parametrize("method, landscape, noise, agents, lr, batch", CASES)
def test_dsgd_dcsgd_curves_match_simulation(method, landscape, noise, agents, lr, batch):
    result, model = _run(method, landscape, noise, lr=lr, agents=agents, batch=batch,
                         steps=1500, runs=300, seed=11, record_every=15)
    _check_curve(result, model)


def test_heterogeneous_omegas_match_simulation():
    """Agents with ω_i ∈ {1, 9} (Bernoulli p = 1/2 and 1/10) and σ_i ∈ {1, 3}."""
    half, tenth = compressors.make("bernoulli:p=0.5"), compressors.make("bernoulli:p=0.1")
    method = methods.DCSGD([half, tenth, half, tenth])
    result, model = _run(method, "quadratic:d=4,eig=0.5:2", "gaussian:scale=1/1/3/3", lr=0.05,
                         agents=4, steps=1500, runs=300, seed=5, record_every=15)
    assert model.omegas.tolist() == [1.0, 9.0, 1.0, 9.0]
    _check_curve(result, model)


def test_rank_one_term_matters_on_a_rotated_quadratic():
    """Rand-k's −(d−k)/(k(d−1)) Off(ggᵀ) term: invisible on diagonal H, 10 % here (§1)."""
    d, rho = 3, 0.95
    h = torch.full((d, d), rho, dtype=torch.float64) + (1 - rho) * torch.eye(d,
                                                                           dtype=torch.float64)
    land = Quadratic(h)
    result, model = _run("dcsgd:randk:k=1", land, "gaussian:scale=1", lr=0.2, agents=1,
                         steps=3000, runs=400, seed=3, record_every=10)
    exact = moment_curve(model, result.steps).loss
    level, se = result.tail_mean(0.5)
    assert abs(level - _tail(exact)) <= 4 * se
    without = moment_curve(model.replace(offdiag=np.zeros(1)), result.steps).loss
    assert abs(level - _tail(without)) > 4 * se      # dropping the term is detectably wrong


def test_rank_one_term_cancels_on_diagonal_quadratics():
    model = QuadraticModel.from_problem("dcsgd:randk:k=2", "quadratic:d=5,eig=0.1:10",
                                        "gaussian:scale=1/2", lr=0.05, agents=2)
    assert model.offdiag[0] == pytest.approx(-3 / 8)
    steps = np.arange(0, 400, 7)
    full = moment_curve(model, steps).loss
    assert np.allclose(full, loss_curve(model, steps).loss, rtol=1e-10)
    assert np.allclose(full, moment_curve(model.replace(offdiag=np.zeros(2)), steps).loss,
                       rtol=1e-10)
    assert np.allclose(moment_curve(model, steps, "sde").loss, loss_curve(model, steps, "sde")
                       .loss, rtol=1e-8)


def test_closed_form_stationary_levels():
    """§4 table: DSGD η d σ̄²/(4NB) (SDE) and the exact discrete Σ_j ηū/(2N(2 − ηλ(1+ω̄/N)))."""
    model = QuadraticModel("dcsgd", [1.0, 2.0], np.array([[1.0], [3.0]]), 0.1, [1.0, 1.0],
                           omegas=[1.0, 3.0])
    u = np.mean([(1 + 1) * 1.0, (1 + 3) * 9.0])
    wbar, n, eta = 2.0, 2, 0.1
    discrete = sum(eta * u / (2 * n * (2 - eta * lam * (1 + wbar / n))) for lam in (1.0, 2.0))
    sde = sum(eta * u / (4 * n) / (1 - eta * wbar * lam / (2 * n)) for lam in (1.0, 2.0))
    assert stationary_loss(model, "discrete") == pytest.approx(discrete, rel=1e-12)
    assert stationary_loss(model, "sde") == pytest.approx(sde, rel=1e-12)
    dsgd = model.replace(method="dsgd", omegas=np.zeros(2))
    assert stationary_loss(dsgd, "sde") == pytest.approx(eta * 2 * 5.0 / (4 * n), rel=1e-12)


def test_infinite_variance_has_no_stationary_loss():
    model = QuadraticModel.from_problem("dcsgd:randk:k=1", "quadratic:d=2",
                                        "student-t:nu=2,scale=1", lr=0.01, agents=2)
    assert math.isinf(stationary_loss(model))
    assert np.isinf(loss_curve(model, [0, 10]).loss[1])


def test_closed_forms_at_model_size_use_the_eigenvalues_only():
    """d = 10⁶: the model keeps H's diagonal (8 MB, not 8 TB) and the curves stay O(d)."""
    d = 10**6
    model = QuadraticModel.from_problem("dsgd", f"quadratic:d={d}", "gaussian:scale=1",
                                        lr=0.01, agents=4, x0=0.0)
    assert model.diagonal and model.hessian.shape == (d,)
    # DSGD on ½‖x‖²: per coordinate m* = η σ²/(N(2 − η)), E f = d m*/2 (THEORY.md §4)
    want = 0.5 * d * 0.01 / (4 * (2 - 0.01))
    assert math.isclose(stationary_loss(model, "discrete"), want, rel_tol=1e-9)
    with pytest.raises(ValueError, match="8 TB"):
        model.matrix  # noqa: B018
