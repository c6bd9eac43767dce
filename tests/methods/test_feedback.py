"""Error feedback (EF21, EF-signSGD) and scaled sign: the update rules, written out, against the
methods and the simulator (THEORY.md §8b)."""

from __future__ import annotations

import math

import pytest
import torch

from compsde import compressors, methods
from compsde.chunks import chunk_generator
from compsde.problem import Problem
from compsde.simulation import simulate


def scaled_sign(v: torch.Tensor) -> torch.Tensor:
    """(‖v‖₁/d) sign(v) per row, sign(0) = +1, the scale rounded to float32 as on the wire."""
    scale = (v.abs().sum(-1, keepdim=True) / v.shape[-1]).to(torch.float32).to(v.dtype)
    return torch.where(v >= 0, 1.0, -1.0).to(v.dtype) * scale


def top_k(v: torch.Tensor, k: int) -> torch.Tensor:
    index = v.abs().topk(k, dim=-1).indices
    return torch.zeros_like(v).scatter_(-1, index, v.gather(-1, index))


def reference(spec: str, noise: str, agents: int, steps: int, lr: float, runs: int,
              seed: int, d: int = 6) -> torch.Tensor:
    """The rules written out on the simulator's noise stream (one chunk):
    EF21 h ← h + C(g − h), x ← x − η mean h; EF-signSGD p = g + e, Δ = ss(p), e ← p − Δ;
    scaled sign x ← x − η mean ss(g)."""
    problem = Problem(spec, f"quadratic:d={d}", noise, lr=lr, agents=agents, x0=1.5)
    gen = chunk_generator(seed, 0, "cpu")
    x = torch.full((runs, d), 1.5, dtype=torch.float64)
    state = torch.zeros((runs, agents, d), dtype=torch.float64)
    for _ in range(steps):
        g = problem.noise.sample((runs, agents, d), gen, 1, dtype=torch.float64, device="cpu")
        g = g + problem.landscape.grad(x).unsqueeze(-2)
        if spec == "scaledsign":
            step = scaled_sign(g).mean(-2)
        elif spec == "ef-signsgd":
            p = g + state
            sent = scaled_sign(p)
            state = p - sent
            step = sent.mean(-2)
        elif spec.startswith("ef21:topk"):
            state = state + top_k(g - state, 2)
            step = state.mean(-2)
        else:
            assert spec == "ef21:scaledsign"
            state = state + scaled_sign(g - state)
            step = state.mean(-2)
        x = x - lr * step
    return x


@pytest.mark.parametrize(("spec", "noise", "agents"), [
    ("scaledsign", "gaussian:scale=1", 3),
    ("ef-signsgd", "gaussian:scale=0.5/1/2", 3),
    ("ef-signsgd", "student-t:nu=1,scale=1", 2),
    ("ef21:topk:k=2", "gaussian:scale=1/3", 2),
    ("ef21:scaledsign", "student-t:nu=2.5", 4)])
def test_simulator_matches_the_update_rule(spec, noise, agents):
    result = simulate(spec, "quadratic:d=6", noise, lr=0.03, steps=40, agents=agents, runs=16,
                      seed=11, x0=1.5)
    expected = reference(spec, noise, agents, 40, 0.03, 16, 11)
    torch.testing.assert_close(result.final_x, expected, rtol=1e-12, atol=1e-12)


def test_ef_signsgd_loses_nothing_it_does_not_keep():
    """Σ_t Δ_t + e_T = Σ_t g_t: the error buffer holds exactly what was not yet sent."""
    method = methods.make("ef-signsgd")
    gen = torch.Generator().manual_seed(0)
    state = method.initial_state((3, 2, 9), torch.float64, "cpu")
    sent_total = torch.zeros(3, 2, 9, dtype=torch.float64)
    grad_total = torch.zeros_like(sent_total)
    for _ in range(25):
        g = torch.randn(3, 2, 9, generator=gen, dtype=torch.float64)
        grad_total += g
        before = state.clone()
        method.step(g.clone(), state, gen)
        sent_total += g + before - state          # Δ_i of this step
    torch.testing.assert_close(sent_total + state, grad_total)


def test_ef21_with_the_identity_sends_the_gradient():
    method = methods.make("ef21:identity")
    gen = torch.Generator().manual_seed(1)
    state = method.initial_state((2, 3, 5), torch.float64, "cpu")
    for _ in range(3):
        g = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
        direction = method.step(g.clone(), state, gen)
        torch.testing.assert_close(state, g)
        torch.testing.assert_close(direction, g.mean(-2))


@pytest.mark.parametrize("spec", ["randk:k=2", "bernoulli:p=0.25", "qsgd:levels=4", "natural"])
def test_ef21_scales_an_unbiased_compressor_by_one_over_one_plus_omega(spec):
    """E C'(v) = v/(1 + ω), and the contraction E‖C'(v) − v‖² ≤ (1 − α)‖v‖², α = 1/(1 + ω):
    both by Monte-Carlo over 20000 draws, within 4 se."""
    method = methods.make(f"ef21:{spec}")
    d, draws = 8, 20000
    v = torch.linspace(-2.0, 1.5, d, dtype=torch.float64)
    out = method.contract(v.expand(draws, d).clone(), torch.Generator().manual_seed(2))
    omega = method.compressor.omega(d)
    mean, se = out.mean(0), out.std(0) / math.sqrt(draws)
    assert ((mean - v / (1 + omega)).abs() <= 4 * se + 1e-12).all()
    err = (out - v).pow(2).sum(-1)
    alpha = method.compressor.contraction(d)
    assert alpha == pytest.approx(1 / (1 + omega))
    bound = (1 - alpha) * float(v.pow(2).sum())
    assert float(err.mean()) <= bound + 4 * float(err.std()) / math.sqrt(draws)


def test_contraction_factors_of_the_biased_compressors():
    assert compressors.make("topk:k=3").contraction(12) == pytest.approx(0.25)
    assert compressors.make("scaledsign").contraction(10) == pytest.approx(0.1)
    assert compressors.make("sign").contraction(10) is None
    v = torch.randn(200, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for spec, alpha in (("topk:k=3", 0.3), ("scaledsign", 0.1)):
        err = (compressors.make(spec)(v) - v).pow(2).sum(-1)
        assert (err <= (1 - alpha) * v.pow(2).sum(-1) + 1e-12).all()


@pytest.mark.parametrize(("spec", "match"), [
    ("ef21", "needs a contractive compressor"),
    ("ef21:sign", "no contraction factor"),
    ("ef-signsgd:beta=1", "takes no options"),
    ("scaledsign:x=1", "takes no options"),
    ("ef21:randk:k=0", "k must be"),
])
def test_bad_specs_are_refused_naming_the_spec(spec, match):
    with pytest.raises(ValueError, match=match):
        methods.make(spec)


@pytest.mark.parametrize("spec", ["ef21:topk:k=2", "ef-signsgd"])
def test_stateful_feedback_refuses_the_stateless_calls(spec):
    method = methods.make(spec)
    assert method.stateful and method.feedback in ("ef21", "error")
    with pytest.raises(ValueError, match=r"Method\.step"):
        method.direction(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match=r"Method\.step"):
        method.messages(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="state"):
        method.step(torch.zeros(1, 2, 3), None)


@pytest.mark.parametrize(("spec", "buffers"), [
    ("dsgd", 0), ("dsignsgd", 0), ("scaledsign", 0), ("signum:beta=0.9", 1),
    ("ef-signsgd", 1), ("ef21:topk:ratio=0.1", 2)])
def test_capabilities_round_trip(spec, buffers):
    method = methods.make(spec)
    assert methods.make(method.spec).spec == method.spec
    assert method.state_buffers == buffers
    assert method.stateful == (buffers > 0)
