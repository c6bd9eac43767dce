"""The Euler–Maruyama integrator: torchsde agreement, records, reproducibility, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compsde import chunks
from compsde.problem import Problem
from compsde.sde import euler_maruyama, simulate_sde
from compsde.sde.diffusion import DiagonalCov
from compsde.sde.models import SDEModel, jacobian_vector, sde_model
from compsde.simulation import simulate
from compsde.validate import compare_curves

torchsde = pytest.importorskip("torchsde")


class SharedIncrements(torchsde.BrownianInterval.__base__):  # torchsde's BaseBrownian
    """A Brownian path given by a table of increments on the grid n·dt (shared by both
    solvers, so they must agree path by path)."""

    def __init__(self, increments: torch.Tensor, dt: float):
        self.increments, self.dt = increments, dt

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        n = round(float(ta) / self.dt)
        assert abs(float(tb) - float(ta) - self.dt) < 1e-9
        return self.increments[n]

    def __repr__(self):
        return "SharedIncrements()"

    dtype = property(lambda self: self.increments.dtype)
    device = property(lambda self: self.increments.device)
    shape = property(lambda self: self.increments.shape[1:])
    levy_area_approximation = property(lambda self: "none")


def sign_sde_parts(lr: float, agents: int):
    sigma = torch.tensor([[1.0], [2.0]], dtype=torch.float64)   # two agents, per-agent scale

    def drift(t, x):
        return -torch.erf(x.unsqueeze(-2) / (math.sqrt(2) * sigma)).mean(-2)

    def diffusion(t, x):
        m = torch.erf(x.unsqueeze(-2) / (math.sqrt(2) * sigma))
        return (1 - (m * m).mean(-2)).sqrt() * math.sqrt(lr / agents)

    return drift, diffusion


@pytest.mark.parametrize("noise_type", ["diagonal", "general"])
def test_euler_maruyama_matches_torchsde_euler_path_by_path(generator, noise_type):
    lr, steps, runs, d = 0.05, 40, 64, 3
    drift, diag = sign_sde_parts(lr, 2)
    mix = torch.randn(d, d + 1, generator=generator, dtype=torch.float64) * 0.3

    def diffusion(t, x):
        g = diag(t, x)
        return g if noise_type == "diagonal" else g.unsqueeze(-1) * mix

    m = d if noise_type == "diagonal" else d + 1
    increments = torch.randn(steps, runs, m, generator=generator, dtype=torch.float64)
    increments *= math.sqrt(lr)

    class TorchsdeSDE(torch.nn.Module):
        sde_type = "ito"

        def __init__(self):
            super().__init__()
            self.noise_type = noise_type

        def f(self, t, y):
            return drift(t, y)

        def g(self, t, y):
            return diffusion(t, y)

    x0 = torch.linspace(-2, 3, runs * d, dtype=torch.float64).reshape(runs, d)
    ts = torch.tensor([0.0, steps * lr], dtype=torch.float64)
    theirs = torchsde.sdeint(TorchsdeSDE(), x0, ts, method="euler", dt=lr,
                             bm=SharedIncrements(increments, lr))[-1]
    ours = euler_maruyama(drift, diffusion, x0, dt=lr, steps=steps,
                          increments=lambda n, shape: increments[n])
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_simulate_sde_agrees_with_torchsde_in_law():
    # simulate_sde's own loop (not euler_maruyama) against torchsde's Euler on DSignSGD's SDE,
    # independent Brownian paths: E f at the end within Monte-Carlo error.
    lr, steps, runs = 0.05, 40, 3000
    p = Problem("dsignsgd", "quadratic:d=2", "gaussian:scale=1", lr=lr, agents=2)
    model = sde_model(p)

    class TorchsdeSDE(torch.nn.Module):
        sde_type, noise_type = "ito", "diagonal"

        def f_and_g(self, t, y):
            drift, cov = model.evaluate(y, lr)
            return drift, cov.diagonal().sqrt() * math.sqrt(lr / 2)

        def f(self, t, y):
            return self.f_and_g(t, y)[0]

        def g(self, t, y):
            return self.f_and_g(t, y)[1]

    x0 = torch.full((runs, 2), 2.0, dtype=torch.float64)
    ts = torch.tensor([0.0, steps * lr], dtype=torch.float64)
    with torch.no_grad():
        end = torchsde.sdeint(TorchsdeSDE(), x0, ts, method="euler", dt=lr,
                              bm=torchsde.BrownianInterval(0.0, steps * lr, (runs, 2),
                                                           dtype=torch.float64, entropy=5))[-1]
    theirs = p.loss(end)
    ours = simulate_sde(p.method, p.landscape, p.noise, lr=lr, steps=steps, agents=2,
                        runs=runs, x0=2.0, record_every=steps, seed=3)
    se = math.hypot(float(theirs.std()) / math.sqrt(runs), ours.loss_se[-1])
    assert abs(float(theirs.mean()) - ours.loss_mean[-1]) <= 4 * se


def test_euler_maruyama_draws_from_its_generator():
    drift, diffusion = sign_sde_parts(0.1, 2)
    x0 = torch.ones(5, 2, dtype=torch.float64)
    run = [euler_maruyama(drift, diffusion, x0, dt=0.1, steps=10,
                          generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])
    assert torch.equal(x0, torch.ones(5, 2, dtype=torch.float64))   # not modified


def test_euler_maruyama_bad_input():
    drift, diffusion = sign_sde_parts(0.1, 2)
    x0 = torch.ones(5, 2, dtype=torch.float64)
    for dt in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="dt must be"):
            euler_maruyama(drift, diffusion, x0, dt=dt, steps=3)
    with pytest.raises(ValueError, match="x0 must be a"):
        euler_maruyama(drift, diffusion, torch.ones(2), dt=0.1, steps=3)
    with pytest.raises(ValueError, match="drift must return shape"):
        euler_maruyama(lambda t, x: x[:, :1], diffusion, x0, dt=0.1, steps=3)
    with pytest.raises(ValueError, match="diffusion must have shape"):
        euler_maruyama(drift, lambda t, x: torch.ones(5, 3), x0, dt=0.1, steps=3)
    with pytest.raises(ValueError, match="increments must return shape"):
        euler_maruyama(drift, diffusion, x0, dt=0.1, steps=3,
                       increments=lambda n, shape: torch.zeros(5, 7))


COMMON = dict(landscape="quadratic:eig=0.5/1/2", agents=4, lr=0.02, steps=150, runs=1000,
              record_every=10, x0=1.0)


@pytest.mark.parametrize("method, noise", [
    ("dsgd", "gaussian:scale=1"),
    ("dsgd", "student-t:nu=4,scale=1"),
    ("dcsgd:randk:k=1", "gaussian:scale=1"),
    ("dcsgd:bernoulli:p=0.4", "gaussian:scale=1/2/1/2"),
    ("dsignsgd", "gaussian:scale=1/2/3/4"),
    ("dsignsgd", "student-t:nu=1,scale=1"),
    ("dsignsgd", "student-t:nu=2.5,scale=1"),
])
def test_sde_mean_loss_matches_the_algorithm(method, noise):
    # Small lr: the O(lr) bias is far below the Monte-Carlo error of 1000 runs (THEORY.md §3).
    alg = simulate(method, noise=noise, seed=1, **COMMON)
    sde = simulate_sde(method, noise=noise, seed=2, samples=8, **COMMON)
    stats = compare_curves(alg, sde, z=4.0)
    assert stats["agree"], stats["max_z"]


def test_result_schema_matches_simulate():
    alg = simulate("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=10, runs=5)
    sde = simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=10, runs=5)
    a, s = alg.to_dict(), sde.to_dict()
    assert set(a) == set(s)
    assert set(a["config"]) <= set(s["config"])
    assert s["config"]["kind"] == "sde" and s["config"]["dt"] == 0.1
    np.testing.assert_array_equal(alg.steps, sde.steps)
    np.testing.assert_allclose(alg.time, sde.time)


def test_seed_reproduces_and_chunks_do_not_matter_for_statistics():
    kw = dict(lr=0.05, steps=50, runs=300, record_every=10)
    a = simulate_sde("dsignsgd", "quadratic:d=3", "gaussian", seed=4, **kw)
    b = simulate_sde("dsignsgd", "quadratic:d=3", "gaussian", seed=4, **kw)
    np.testing.assert_array_equal(a.losses, b.losses)
    c = simulate_sde("dsignsgd", "quadratic:d=3", "gaussian", seed=4, memory_budget=300 * 288,
                     **kw)  # exactly one chunk's working set: (8 + 4·1·1)·3 float64 per path
    np.testing.assert_array_equal(c.losses, a.losses)
    with pytest.raises(ValueError, match="memory_budget must be at least 86400 bytes"):
        simulate_sde("dsignsgd", "quadratic:d=3", "gaussian", seed=4, memory_budget=2000, **kw)


def test_chunks_are_seeded_by_their_index(monkeypatch):
    kw = dict(lr=0.05, steps=50, runs=300, record_every=10, seed=4)
    whole = simulate_sde("dsgd", "quadratic:d=3", "gaussian", **kw)
    monkeypatch.setattr(chunks, "CHUNK_NUMBERS", 60)  # (1 + 1)·3 draws per path: 10 per chunk
    split = simulate_sde("dsgd", "quadratic:d=3", "gaussian", **kw)
    assert not np.array_equal(split.losses, whole.losses)
    (m1, s1), (m2, s2) = whole.tail_mean(), split.tail_mean()
    assert abs(m1 - m2) <= 5 * math.hypot(s1, s2)


def test_finer_dt_and_schedules():
    res = simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=20, runs=10,
                       dt=0.03)
    assert res.config["substeps"] == 4 and res.config["dt"] == pytest.approx(0.025)
    inv = simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=4, runs=3,
                       lr_schedule="inv-sqrt")
    np.testing.assert_allclose(inv.time[-1], sum(0.1 / math.sqrt(k + 1) for k in range(4)))


def test_simulate_sde_bad_input():
    with pytest.raises(ValueError, match="dt must be"):
        simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=5, dt=0.0)
    with pytest.raises(ValueError, match="dt must be in"):
        simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=5, dt=0.2)
    with pytest.raises(ValueError, match="covariance of the gradient noise does not exist"):
        simulate_sde("dcsgd:randk:k=1", "quadratic:d=2", "student-t:nu=2", lr=0.1, steps=5)
    with pytest.raises(ValueError, match="x0 must be"):
        simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=5, x0=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="steps must be"):
        simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=0)

    class Broken(SDEModel):
        def evaluate(self, x, lr):
            return x[:, :1], DiagonalCov(torch.ones_like(x))

    with pytest.raises(ValueError, match="drift has shape"):
        simulate_sde("dsgd", "quadratic:d=2", "gaussian", lr=0.1, steps=5,
                     model=lambda p, g: Broken(p))


def test_divergence_is_counted_not_raised():
    # DSGD on λ = 1 with lr = 2.5 > 2/λ diverges. Integrated finely (dt = lr/20), the classic
    # SDE contracts while the stability-corrected one (THEORY.md §8) diverges like the algorithm.
    kw = dict(lr=2.5, steps=30, runs=20, x0=1.0, diverge_threshold=1e8)
    alg = simulate("dsgd", "quadratic:d=1", "gaussian:scale=0.01", **kw)
    classic = simulate_sde("dsgd", "quadratic:d=1", "gaussian:scale=0.01", dt=0.125, **kw)
    corrected = simulate_sde("dsgd", "quadratic:d=1", "gaussian:scale=0.01", dt=0.125,
                             stability=True, **kw)
    assert alg.diverged_fraction == 1.0 and corrected.diverged_fraction == 1.0
    assert classic.diverged_fraction == 0.0


def test_stability_corrected_drift_decay_rate():
    # THEORY.md §8: with b = −∇f + (η/2)∇²f∇f, E f on λx²/2 decays at 2λ(1 − λη/2).
    lam, lr, horizon = 2.0, 0.2, 1.0
    p = Problem("dsgd", f"quadratic:eig={lam}", "gaussian:scale=1e-8", lr=lr)
    x = torch.tensor([[1.5]], dtype=torch.float64)
    model = sde_model(p, stability=True)
    torch.testing.assert_close(model.drift(x, lr), -lam * (1 - lam * lr / 2) * x)
    res = simulate_sde(p.method, p.landscape, p.noise, lr=lr, steps=round(horizon / lr),
                       runs=1, stability=True, dt=lr / 500)
    expected = 0.5 * lam * math.exp(-2 * lam * (1 - lam * lr / 2) * horizon)
    assert res.loss_mean[-1] == pytest.approx(expected, rel=2e-3)


def test_jacobian_vector_is_exact_on_linear_maps(generator):
    a = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    x = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    v = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    v[1] = 0.0
    torch.testing.assert_close(jacobian_vector(lambda y: y @ a.T, x, v), v @ a.T)
