"""Majority vote and Signum (compsde.methods, compsde.simulation): specs, refusals, and the
simulator bitwise against an independent implementation of the update rules (THEORY.md §8)."""

from __future__ import annotations

import pytest
import torch

from compsde import methods
from compsde.chunks import chunk_generator
from compsde.problem import Problem
from compsde.simulation import simulate


@pytest.mark.parametrize(("spec", "server", "stateful"), [
    ("dsignsgd:vote=majority", "vote", False), ("signum:beta=0.9", "mean", True),
    ("signum:beta=0.5,vote=majority", "vote", True), ("signum:beta=0", "mean", True),
    ("dsignsgd", "mean", False), ("dsgd", "mean", False)])
def test_specs_round_trip_with_their_capabilities(spec, server, stateful):
    method = methods.make(spec)
    assert (method.server, method.stateful) == (server, stateful)
    assert methods.make(method.spec).spec == method.spec
    assert method.name not in ("dsgd", "dcsgd") or spec.startswith(method.name)
    if spec != "dsignsgd":        # never the paper's DSignSGD under another spec
        assert type(method) is not methods.DSignSGD


@pytest.mark.parametrize(("spec", "match"), [
    ("signum:beta=1.5", r"beta of signum must be in \[0, 1\)"),
    ("signum:beta=-0.1", r"beta of signum must be in \[0, 1\)"),
    ("signum:beta=1", r"beta of signum must be in \[0, 1\)"),
    ("signum:beta=nan", r"beta of signum must be in \[0, 1\)"),
    ("signum:beta=x", "beta of signum must be a number"),
    ("signum", "needs beta"),
    ("signum:beta=0.9,vote=mean", "vote of .* must be one of majority"),
    ("dsignsgd:vote=minority", "vote of .* must be one of majority"),
    ("dsignsgd:beta=0.9", "does not take beta"),
    ("signum:beta=0.9,k=3", "does not take k")])
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        methods.make(spec)


@pytest.mark.parametrize("spec", ["dsignsgd:vote=majority", "signum:beta=0.9,vote=majority"])
def test_a_vote_of_one_agent_is_refused(spec):
    with pytest.raises(ValueError, match="agents must be at least 2"):
        Problem(spec, "quadratic:d=2", "gaussian", lr=0.1, agents=1)
    with pytest.raises(ValueError, match="agents must be at least 2"):
        simulate(spec, "quadratic:d=2", "gaussian", lr=0.1, steps=1, agents=1)


def test_even_vote_gives_zero_on_a_tie():
    grads = torch.tensor([[[1.0, -1.0, 0.0, -2.0], [-1.0, -1.0, 3.0, 0.0]]])   # N = 2
    assert methods.make("dsignsgd:vote=majority").direction(grads).tolist() == \
        [[0.0, -1.0, 1.0, 0.0]]


def test_signum_refuses_the_stateless_direction_and_messages():
    with pytest.raises(ValueError, match="momentum per agent"):
        methods.make("signum:beta=0.9").direction(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="signs of its momenta"):
        methods.make("signum:beta=0.9").messages(torch.zeros(1, 2, 3))


def reference(spec: str, noise: str, agents: int, steps: int, lr: float, runs: int,
              seed: int) -> torch.Tensor:
    """The update rules written out (one chunk, the simulator's noise stream): per-agent
    momentum m_i ← βm_i + (1 − β)g_i; vote sign(Σ sign), sign(0) = +1; or the mean of signs."""
    problem = Problem(spec, "quadratic:d=5", noise, lr=lr, agents=agents, x0=1.5)
    method = problem.method
    beta = getattr(method, "beta", None)
    vote = method.server == "vote"
    gen = chunk_generator(seed, 0, "cpu")
    x = torch.full((runs, 5), 1.5, dtype=torch.float64)
    m = torch.zeros((runs, agents, 5), dtype=torch.float64)
    for _ in range(steps):
        g = problem.noise.sample((runs, agents, 5), gen, 1, dtype=torch.float64, device="cpu")
        g = g + problem.landscape.grad(x).unsqueeze(-2)
        if beta is not None:
            m.mul_(beta).add_(g, alpha=1.0 - beta)
            g = m
        signs = torch.where(g >= 0, 1.0, -1.0).to(torch.float64)
        total = signs.sum(-2)
        step = torch.sign(total) if vote else total / agents
        x.sub_(step, alpha=lr)
    return x


@pytest.mark.parametrize(("spec", "noise", "agents"), [
    ("dsignsgd:vote=majority", "gaussian:scale=1", 3),
    ("dsignsgd:vote=majority", "student-t:nu=1,scale=1/2/3/4", 4),
    ("signum:beta=0.9", "gaussian:scale=0.5/1/2", 3),
    ("signum:beta=0.8,vote=majority", "student-t:nu=2.5", 2),
    ("signum:beta=0.7,vote=majority", "gaussian:scale=1/3/1/3/1", 5)])
def test_simulator_matches_the_update_rule_bitwise(spec, noise, agents):
    result = simulate(spec, "quadratic:d=5", noise, lr=0.03, steps=40, agents=agents, runs=16,
                      seed=7, x0=1.5)
    expected = reference(spec, noise, agents, 40, 0.03, 16, 7)
    assert torch.equal(result.final_x, expected)


def test_signum_without_momentum_is_dsignsgd_bitwise_and_momentum_changes_it():
    kw = dict(lr=0.05, steps=30, agents=3, runs=8, seed=3)
    plain = simulate("dsignsgd", "quadratic:d=4", "gaussian", **kw).final_x
    assert torch.equal(simulate("signum:beta=0", "quadratic:d=4", "gaussian", **kw).final_x,
                       plain)
    assert not torch.equal(simulate("signum:beta=0.9", "quadratic:d=4", "gaussian",
                                    **kw).final_x, plain)


def test_the_momentum_buffer_counts_in_the_memory_check():
    # 5 vectors of agents × d for Signum against 4 for DSignSGD: a budget between the two
    kw = dict(lr=0.1, steps=1, agents=4, runs=1)
    per_vector = 4 * 1000 * 8
    simulate("dsignsgd", "quadratic:d=1000", "gaussian", memory_budget=4 * per_vector, **kw)
    with pytest.raises(ValueError, match="memory_budget"):
        simulate("signum:beta=0.9", "quadratic:d=1000", "gaussian",
                 memory_budget=4 * per_vector, **kw)
