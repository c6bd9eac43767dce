"""Power iteration on Hessian-vector products finds λ_max.

Tolerance: the Krylov–Weinstein bound — some eigenvalue lies within ‖Hv − λ̂v‖ of the Rayleigh
quotient λ̂ — so a converged run (start vector with a component on the top eigenvector) has
``|λ̂ − λ_max| ≤ residual · |λ̂|``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from compsde import landscapes
from compsde.diagnose import function_hvp, model_hvp, top_eigenvalue


def test_quadratic_top_eigenvalue(generator):
    eig = torch.tensor([10.0, 5.0, 3.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    land = landscapes.Quadratic(eig)
    hvp = function_hvp(land.grad, torch.ones(6, dtype=torch.float64))
    est = top_eigenvalue(hvp, 6, generator=generator, tol=1e-10, iters=500,
                         dtype=torch.float64)
    assert est.converged
    assert abs(est.value - 10.0) <= est.residual * est.value + 1e-9


def test_negative_curvature_is_shifted_away(generator):
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=torch.float64))
    h = q @ torch.diag(torch.tensor([-20.0, 5.0, 2.0, 1.0, -1.0], dtype=torch.float64)) @ q.T
    est = top_eigenvalue(lambda v: h @ v, 5, generator=generator, tol=1e-12, iters=2000,
                         dtype=torch.float64)
    assert abs(est.largest_magnitude + 20.0) <= 1e-6 * 20
    assert abs(est.value - 5.0) <= est.residual * 25.0 + 1e-6   # residual of the shifted run


def test_model_hvp_matches_dense_hessian(generator):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(3, (32,), generator=generator)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = shape.numel()
            parts[name] = flat[start:start + size].reshape(shape)
            start += size
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    dense = torch.autograd.functional.hessian(loss_of, flat0)
    hvp, d = model_hvp(model, nn.functional.cross_entropy(model(x), y))
    v = torch.randn(d, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(hvp(v), dense @ v, rtol=1e-9, atol=1e-12)
    est = top_eigenvalue(hvp, d, generator=generator, tol=1e-12, iters=5000,
                         dtype=torch.float64)
    true = float(torch.linalg.eigvalsh(dense)[-1])
    assert abs(est.value - true) <= est.residual * abs(est.value) + 1e-9, (est, true)
