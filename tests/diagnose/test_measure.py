"""measure_*: Student-t noise injected into a quadratic and into an MLP's gradients is recovered;
phases, ω and curvature come out as the theory says.

Tolerances as in test_tails.py: ν within 5 profile-likelihood se, mean log-scale within
5 ``log_scale_se``; locations within 5 standard errors of their mean.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compsde import landscapes, noise
from compsde.diagnose import measure_gradients, measure_landscape, measure_model
from compsde.nn.data import make_synthetic
from compsde.nn.models import make_model


def check_recovered(m, nu: float, scale: float, grad: torch.Tensor) -> None:
    fit = m.fit
    assert abs(fit.nu - nu) <= 5 * fit.nu_se, (fit.nu, fit.nu_se)
    assert abs(float(fit.scale.log().mean()) - math.log(scale)) <= 5 * fit.log_scale_se
    loc_se = scale * math.sqrt((nu + 3) / ((nu + 1) * m.samples)) / math.sqrt(m.kept)
    assert abs(float((fit.loc - grad[m.coords]).mean())) <= 5 * loc_se


def test_student_t_injected_into_a_quadratic(generator):
    land = landscapes.make("quadratic:d=400,eig=0.1:10")
    x = torch.full((400,), 0.2, dtype=torch.float64)
    m = measure_landscape(land, noise.make("student-t:nu=2,scale=0.3"), x=x, samples=64,
                          generator=generator, compressors=["randk:ratio=0.25"])
    check_recovered(m, 2.0, 0.3, land.grad(x))
    assert not m.fit.finite_variance
    assert m.curvature is not None
    # the spectrum is clustered near 10, so only the exact facts hold: a Rayleigh quotient never
    # exceeds λ_max, and some eigenvalue lies within the residual (Krylov–Weinstein)
    lam, eig = m.curvature.value, land.eigenvalues
    assert lam <= 10.0 + 1e-9
    assert float((eig - lam).abs().min()) <= m.curvature.residual * lam
    assert m.omegas["randk:ratio=0.25"].omega == pytest.approx(3.0)


def test_student_t_injected_into_mlp_gradients(generator):
    data = make_synthetic(n=64, shape=(1, 8, 8), classes=10, seed=1)
    model = make_model("mlp:hidden=16", data.image_shape, data.classes, seed=2)
    x, y = data.train_batch(torch.arange(64))

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target)

    model.zero_grad()
    loss_fn(model(x), y).backward()
    true = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    law = noise.make("student-t:nu=3,scale=0.01")        # the same batch every time: only
    m = measure_model(model, loss_fn, lambda _: (x, y), samples=64, batch=64,  # injected noise
                      curvature_data=(x, y), inject=law, generator=generator,
                      compressors=["natural"], nu_columns=600)
    assert m.d == true.numel() == 64 * 16 + 16 + 16 * 10 + 10
    check_recovered(m, 3.0, 0.01, true)
    assert m.fit.finite_variance
    # Var of t_3 with scale σ is 3σ²; the Welford total has a heavy (infinite-4th-moment)
    # sampling law, so only its order of magnitude is checked here
    assert 0.5 < m.variance_sum / (3 * 0.01**2 * m.d) < 2.0
    assert m.curvature is not None and m.curvature.value > 0
    assert m.compute_seconds is not None and m.compute_seconds > 0
    assert 0 < m.omegas["natural"].omega <= 0.125


def test_phases_follow_the_signal_to_noise_ratio(generator):
    # H = I: ∂_j f = x_j. Y_j = x_j/(√2σ) is 0.5, 1.25 or 3: Phase 3, 2, 1. The estimate
    # |μ̂|/(√2σ̂) has se ≈ √(1 + Y²)/√(2M) (location and scale errors); with M = 512 the
    # nearest threshold is ≥ 5 se away for each of the three values (worst: 1.25 vs 1.5).
    y_true = torch.tensor([0.5, 1.25, 3.0], dtype=torch.float64).repeat(20)
    land = landscapes.make("quadratic:d=60")
    m = measure_landscape(land, noise.make("gaussian:scale=1"), x=y_true * math.sqrt(2),
                          samples=512, generator=generator, compressors=[])
    expected = torch.tensor([3, 2, 1]).repeat(20)
    assert torch.equal(m.phase_labels, expected)
    assert m.phases == pytest.approx({"phase1": 1 / 3, "phase2": 1 / 3, "phase3": 1 / 3})
    # sign means are erf(Y) for Gaussian noise (THEORY.md §3); φ' ≤ 2/√π bounds the error
    se = (1 + y_true**2).sqrt() / math.sqrt(2 * 512)
    assert ((m.sign_means() - torch.erf(y_true)).abs() <= 5 * se * 2 / math.sqrt(math.pi)).all()


def test_omega_is_exact_where_the_covariance_is_known(generator):
    grads = [torch.randn(500, generator=generator) * 3 for _ in range(20)]
    m = measure_gradients(iter(grads), samples=20, generator=generator,
                          compressors=["randk:ratio=0.25", "bernoulli:p=0.5", "natural",
                                       "qsgd:levels=4"])
    assert m.omegas["randk:ratio=0.25"].omega == pytest.approx(3.0)
    assert m.omegas["bernoulli:p=0.5"].omega == pytest.approx(1.0)
    assert 0 < m.omegas["natural"].omega <= 0.125
    q = m.omegas["qsgd:levels=4"]
    assert 0 < q.omega <= q.nominal
    with pytest.raises(ValueError, match="compressors must be unbiased"):
        measure_gradients(iter(grads), samples=20, compressors=["sign"])


def test_bad_input(generator):
    grads = [torch.randn(50, generator=generator) for _ in range(20)]
    with pytest.raises(ValueError, match="samples"):
        measure_gradients(iter(grads), samples=8)
    with pytest.raises(ValueError, match="samples must be at most"):
        measure_gradients(iter(grads), samples=30)
    grads[3] = torch.full((50,), math.nan)
    with pytest.raises(ValueError, match="NaN or inf"):
        measure_gradients(iter(grads), samples=20)
