"""Test functions (THEORY.md §4, §7): gradients, Hessians, minima, batching, specs."""

from __future__ import annotations

import math

import pytest
import torch

from compsde import landscapes
from compsde.landscapes import Autograd, Landscape, Quadratic, Rosenbrock, Saddle


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen(seed), dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def cases() -> list[Landscape]:
    indefinite = spd(4, 2) - 3.0 * torch.eye(4, dtype=torch.float64)
    return [
        landscapes.make("quadratic:d=5"),
        landscapes.make("quadratic:d=4,eig=0.1:10"),
        Quadratic(spd(4, 1)),
        Quadratic(indefinite),
        landscapes.make("rosenbrock"),
        Rosenbrock(d=5, a=1.5, b=30.0),
        landscapes.make("saddle"),
        Saddle(d=5, neg=2, a=2.0, c=0.5, lam=0.7),
        Autograd(lambda x: (x**4).sum(-1) + torch.sin(x[..., 0] * x[..., 1]), 3, name="toy"),
    ]


CASES = cases()
IDS = [case.spec for case in CASES]


def points(case: Landscape, *lead: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(*lead, case.dim, generator=gen(seed), dtype=torch.float64)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_grad_matches_autograd_and_finite_differences(case: Landscape) -> None:
    x = points(case, 3, 4)
    g = case.grad(x)
    assert g.shape == x.shape and g.dtype == x.dtype
    xr = x.clone().requires_grad_(True)
    case.value(xr).sum().backward()
    assert torch.allclose(g, xr.grad, rtol=1e-12, atol=1e-12)
    h = 1e-6
    eye = torch.eye(case.dim, dtype=torch.float64)
    fd = torch.stack([(case.value(x + h * e) - case.value(x - h * e)) / (2 * h) for e in eye], -1)
    assert torch.allclose(g, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hessian_matches_autograd_and_finite_differences(case: Landscape) -> None:
    x = points(case, 2, 3)
    hess = case.hessian(x)
    assert hess.shape == (2, 3, case.dim, case.dim)
    assert torch.allclose(hess, hess.transpose(-1, -2), atol=1e-12)
    reference = Autograd(case.value, case.dim).hessian(x)
    assert torch.allclose(hess, reference, rtol=1e-10, atol=1e-10)
    h = 1e-6
    eye = torch.eye(case.dim, dtype=torch.float64)
    fd = torch.stack([(case.grad(x + h * e) - case.grad(x - h * e)) / (2 * h) for e in eye], -1)
    assert torch.allclose(hess, fd, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_batching_dtype_and_shapes(case: Landscape) -> None:
    x = points(case, 4, 5)
    v = case.value(x)
    assert v.shape == (4, 5)
    rows = torch.stack([case.value(x[i, j]) for i in range(4) for j in range(5)]).view(4, 5)
    assert torch.allclose(v, rows, rtol=1e-14, atol=1e-14)
    single = case.grad(x[1, 2])
    assert single.shape == (case.dim,) and torch.allclose(single, case.grad(x)[1, 2])
    x32 = x.float()
    assert case.value(x32).dtype == torch.float32 and case.grad(x32).dtype == torch.float32
    assert case.hessian(x32[0]).dtype == torch.float32
    assert torch.allclose(case.grad(x32).double(), case.grad(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", [c for c in CASES if c.minimum is not None],
                         ids=[c.spec for c in CASES if c.minimum is not None])
def test_minimum_is_attained_and_lower_bounds(case: Landscape) -> None:
    assert case.minimizer is not None
    xstar = case.minimizer
    assert float(case.value(xstar)) == pytest.approx(case.minimum, abs=1e-14)
    assert float(case.grad(xstar).abs().max()) <= 1e-12
    cloud = 2.0 * torch.randn(20_000, case.dim, generator=gen(4), dtype=torch.float64)
    assert float(case.value(cloud).min()) >= case.minimum
    near = xstar + 1e-3 * torch.randn(2_000, case.dim, generator=gen(5), dtype=torch.float64)
    assert float(case.value(near).min()) >= case.minimum - 1e-15


def test_minimum_metadata() -> None:
    assert landscapes.make("quadratic:d=3").minimum == 0.0
    assert Quadratic(torch.tensor([1.0, -1.0])).minimum is None
    assert Quadratic(spd(3, 1) - 100 * torch.eye(3, dtype=torch.float64)).minimum is None
    assert Rosenbrock(d=3, a=2.0).minimum is None       # no closed form for d > 2, a ∉ {0, 1}
    assert Rosenbrock(d=4, a=0.0).minimum == 0.0
    r = Rosenbrock(d=2, a=-1.5, b=7.0)
    assert r.minimum == 0.0 and torch.equal(r.minimizer, torch.tensor([-1.5, 2.25]).double())
    assert Autograd(lambda x: x.square().sum(-1), 2, minimum=0.0).minimum == 0.0


def test_saddle_formula_and_negative_curvature() -> None:
    s = Saddle(d=4, neg=2, a=2.0, c=1.0, lam=0.5)
    assert s.minimum == pytest.approx(-(2.0**2) / (4 * 0.5))   # −a²/(4λ) = −2
    zero = torch.zeros(4, dtype=torch.float64)
    assert float(s.value(zero)) == 0.0 and float(s.grad(zero).abs().max()) == 0.0
    curv = torch.linalg.eigvalsh(s.hessian(zero))
    assert torch.allclose(curv, torch.tensor([-2.0, -2.0, 1.0, 1.0]).double())
    # every point of the sphere ‖x‖² = a/λ in the negative span is a minimiser
    angle = torch.linspace(0, 2 * math.pi, 17, dtype=torch.float64)
    ring = torch.stack([angle.cos(), angle.sin(), 0 * angle, 0 * angle], -1) * 2.0
    assert torch.allclose(s.value(ring), torch.full((17,), -2.0, dtype=torch.float64))
    x = torch.tensor([0.3, -0.2, 0.5, 1.0], dtype=torch.float64)
    h = torch.tensor([-2.0, -2.0, 1.0, 1.0], dtype=torch.float64)
    assert float(s.value(x)) == pytest.approx(0.5 * (h * x * x).sum() + 0.125 * (x @ x) ** 2)
    default = landscapes.make("saddle")
    assert default.dim == 2 and default.minimum == -0.25
    assert float(torch.linalg.eigvalsh(default.hessian(torch.zeros(2).double()))[0]) < 0


def test_quadratic_specs() -> None:
    q = landscapes.make("quadratic:d=5")
    assert q.dim == 5 and q.diagonal and torch.equal(q.eigenvalues, torch.ones(5).double())
    assert q.lipschitz() == 1.0 and q.spec == "quadratic:d=5"
    x = torch.tensor([1.0, 2.0, 0.0, 0.0, -1.0], dtype=torch.float64)
    assert float(q.value(x)) == 3.0
    spread = landscapes.make("quadratic:d=5,eig=0.1:10")
    expected = 0.1 * 100.0 ** (torch.arange(5, dtype=torch.float64) / 4)
    assert torch.allclose(spread.eigenvalues, expected, rtol=1e-14)
    assert spread.eigenvalues[0] == 0.1 and spread.eigenvalues[-1] == 10.0
    assert bool((spread.eigenvalues.diff() > 0).all()) and spread.lipschitz() == 10.0
    assert spread.spec == "quadratic:d=5,eig=0.1:10"
    assert landscapes.make(spread.spec).spec == spread.spec
    listed = landscapes.make("quadratic:eig=1/-2/3")
    assert listed.dim == 3 and listed.minimum is None and listed.lipschitz() == 3.0
    assert landscapes.make("quadratic").dim == 2
    assert landscapes.make("quadratic:d=1,eig=2:5").eigenvalues.tolist() == [2.0]
    full = Quadratic(spd(3, 7))
    assert not full.diagonal
    assert full.lipschitz() == pytest.approx(float(torch.linalg.eigvalsh(spd(3, 7)).max()))


def test_rosenbrock_specs() -> None:
    r = landscapes.make("rosenbrock")
    assert (r.dim, r.a, r.b, r.minimum) == (2, 1.0, 100.0, 0.0)
    assert float(r.value(torch.tensor([-1.0, 1.0]).double())) == 4.0
    r4 = landscapes.make("rosenbrock:d=4,a=1,b=100")
    assert r4.dim == 4 and float(r4.value(torch.ones(4).double())) == 0.0
    assert r4.lipschitz() is None
    assert landscapes.make(r4.spec).spec == r4.spec
    s = landscapes.make("saddle:d=3,neg=2,a=1.5,c=2,lam=3")
    assert (s.dim, s.neg, s.a, s.c, s.lam) == (3, 2, 1.5, 2.0, 3.0)
    assert landscapes.make(s.spec).spec == s.spec


def test_autograd_landscape() -> None:
    toy = Autograd(lambda x: (x**4).sum(-1), 3, minimum=0.0, minimizer=[0.0, 0.0, 0.0])
    x = points(toy, 6)
    assert torch.allclose(toy.grad(x), 4 * x**3)
    assert torch.allclose(toy.hessian(x), torch.diag_embed(12 * x**2))
    with torch.no_grad():                                # works under no_grad too
        assert torch.allclose(toy.grad(x), 4 * x**3)
    assert toy.lipschitz() is None and toy.spec == "autograd:d=3"
    const = Autograd(lambda x: x.sum(-1) * 0 + 1.0, 2)
    assert torch.equal(const.grad(torch.ones(2, 2)), torch.zeros(2, 2))


@pytest.mark.parametrize(("spec", "word"), [
    ("quadratic:d=0", "d"), ("quadratic:d=-3", "d"), ("quadratic:d=2.5", "d"),
    ("quadratic:d=5,eig=0:10", "eig"), ("quadratic:d=5,eig=10:1", "eig"),
    ("quadratic:d=5,eig=-1:2", "eig"), ("quadratic:d=5,eig=1:inf", "eig"),
    ("quadratic:d=5,eig=a:b", "eig"), ("quadratic:d=5,eig=1/2", "eig"),
    ("quadratic:eig=1/nan", "eig"), ("quadratic:d=5,lam=1", "lam"),
    ("rosenbrock:d=1", "d"), ("rosenbrock:b=0", "b"), ("rosenbrock:a=x", "a"),
    ("rosenbrock:c=1", "c"), ("saddle:d=0", "d"), ("saddle:neg=3", "neg"),
    ("saddle:neg=0", "neg"), ("saddle:lam=0", "lam"), ("saddle:a=-1", "a"),
    ("saddle:c=nan", "c"), ("himmelblau", "quadratic"), ("quadratic:d", "malformed"),
    ("", "landscape"), ("quadratic:d=2,d=3", "repeats"),
])
def test_bad_specs(spec: str, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        landscapes.make(spec)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_wrong_input_shape(case: Landscape) -> None:
    for bad in (torch.zeros(3, case.dim + 1), torch.zeros(()), torch.zeros(case.dim, 1)):
        for method in (case.value, case.grad, case.hessian):
            with pytest.raises(ValueError, match="x must"):
                method(bad)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="symmetric"):
        Quadratic(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="h must"):
        Quadratic(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="h must"):
        Quadratic([])
    with pytest.raises(ValueError, match="finite"):
        Quadratic([1.0, float("inf")])
    with pytest.raises(ValueError, match="dim"):
        Autograd(lambda x: x.sum(-1), 0)
    with pytest.raises(ValueError, match="fn"):
        Autograd(3, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fn must map"):
        Autograd(lambda x: x, 2).value(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="minimizer"):
        Autograd(lambda x: x.sum(-1), 2, minimizer=[0.0])


def test_diagonal_quadratic_keeps_only_its_eigenvalues_at_model_size() -> None:
    q = landscapes.make("quadratic:d=1000000,eig=0.01:100")
    assert q.diagonal and q._matrix is None and q.eigenvalues.shape == (10**6,)
    x = torch.ones(2, 10**6, dtype=torch.float64)
    torch.testing.assert_close(q.grad(x), x * q.eigenvalues)
    torch.testing.assert_close(q.value(x), 0.5 * q.eigenvalues.sum().expand(2))
    torch.testing.assert_close(q.hessian_diagonal(x[0]), q.eigenvalues)
    assert q._matrix is None  # nothing above built the 8 TB matrix
    for dense in (lambda: q.matrix, lambda: q.hessian(x[0])):
        with pytest.raises(ValueError, match=r"\(1000000, 1000000\) matrix needing 8 TB"):
            dense()


def test_dense_hessians_are_refused_past_the_budget(monkeypatch) -> None:
    monkeypatch.setattr(landscapes, "DENSE_BUDGET", 10 * 10 * 8 * 3)  # three 10×10 float64
    small = torch.zeros(3, 10, dtype=torch.float64)
    for case in (landscapes.make("quadratic:d=10"), Rosenbrock(10), Saddle(10),
                 Autograd(lambda x: (x**4).sum(-1), 10)):
        assert case.hessian(small).shape == (3, 10, 10)
        with pytest.raises(ValueError, match=r"per point needing 3\.2 kB"):
            case.hessian(torch.zeros(4, 10, dtype=torch.float64))
    full = Quadratic(spd(10, 3))
    torch.testing.assert_close(full.hessian_diagonal(small[0]), torch.diagonal(full.matrix))
