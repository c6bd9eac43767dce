"""Majority vote and Signum through the DDP hook and FSDP2's reduce-scatter on 2 and 3 gloo
ranks, against AgentSimulator and against the update rules written out (THEORY.md §8).

One launch per world size (tests/distributed/sign_family_worker.py). The DDP model spans
several buckets and DDP rebuilds them after the first step, so Signum's momentum is carried
over parameter by parameter; the vote's bytes are checked against the analytic counts.
"""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ddp_cases import LR, SHAPES, STEPS, rank_grads, replay  # noqa: E402
from ddp_spawn import rank_records  # noqa: E402
from fsdp_layouts import UNITS, LayoutModel, grads_for, sgd_from_rows  # noqa: E402
from sign_family_worker import DDP_CASES, FSDP_CASES  # noqa: E402

from compsde.distributed import AgentSimulator  # noqa: E402
from compsde.distributed.fsdp import fsdp_flat  # noqa: E402
from compsde.distributed.wire import (  # noqa: E402
    all_gather_bytes,
    all_to_all_bytes,
    allreduce_bytes,
    packed_nbytes,
    sign_shard,
)

NAMES = [f"weights.{i}" for i in range(len(SHAPES))]


@pytest.fixture(scope="module", params=(2, 3), ids=lambda w: f"world{w}")
def launched(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"signs{world}")
    return world, rank_records(HERE / "sign_family_worker.py", world, out, timeout=240)


def rule(spec: str, world: int) -> list[list[torch.Tensor]]:
    """The parameters after every step from the update rule itself: per-rank momentum
    m ← βm + (1 − β)g (Signum), sign(0) = +1, the vote sign(Σ sign) or the mean of signs."""
    beta = float(spec.split("beta=")[1].split(",")[0]) if spec.startswith("signum") else None
    vote = "vote=majority" in spec
    params = [torch.zeros(s) for s in SHAPES]
    momentum = [[torch.zeros(s) for s in SHAPES] for _ in range(world)]
    history = []
    for step in range(STEPS):
        per_rank = [rank_grads(r, step) for r in range(world)]
        for i in range(len(SHAPES)):
            signs = []
            for r in range(world):
                g = per_rank[r][i]
                if beta is not None:
                    g = momentum[r][i].mul_(beta).add_(g, alpha=1.0 - beta)
                signs.append(torch.where(g >= 0, 1.0, -1.0))
            total = torch.stack(signs).sum(0)
            step_dir = torch.sign(total) if vote else total / world
            params[i].add_(step_dir, alpha=-LR)
        history.append([p.clone() for p in params])
    return history


@pytest.mark.parametrize("name", list(DDP_CASES))
def test_ddp_hook_equals_the_simulation_and_the_rule(launched, name):
    world, ranks = launched
    spec, options = DDP_CASES[name]
    record = ranks[0]["ddp"][name]
    assert "error" not in record, record["error"]
    assert len(record["layouts"][0]) == 1 and len(record["layouts"][-1]) >= 2   # rebuilt
    sim, history = replay(spec, options, world, record["layouts"])
    expected = rule(spec, world)
    for step in range(STEPS):
        for got, want, exact in zip(record["params"][step], history[step], expected[step],
                                    strict=True):
            assert torch.equal(got, want), (name, step)
            torch.testing.assert_close(got, exact, rtol=0, atol=1e-6)
    assert record["counters"] == sim.counters()
    for other in ranks[1:]:
        for got, want in zip(other["ddp"][name]["params"][-1], record["params"][-1], strict=True):
            assert torch.equal(got, want)


def test_vote_scatter_sends_the_vote_not_the_counts(launched):
    """Downlink of the reduce-scatter: vote_bits(N)·s/8 bytes per shard (1 bit per coordinate
    for odd N, 2 for even N: the tie) instead of ⌈log₂(N+1)⌉·s/8; per step, every bucket's
    all-to-all of N·(s/8 + 1) bytes plus the gathered downlink, counted exactly."""
    world, ranks = launched
    record = ranks[0]["ddp"]["vote-scatter"]
    sizes = {n: math.prod(s) for n, s in zip(NAMES, SHAPES, strict=True)}
    bits = 1 if world % 2 else 2
    payload = moved = 0.0
    fp32 = 0.0
    for layout in record["layouts"]:
        for names in layout.values():
            d = sum(sizes[n] for n in names)
            shard_bytes = sign_shard(d, world) // 8
            payload += world * (shard_bytes + 1) + bits * shard_bytes
            moved += all_to_all_bytes(shard_bytes + 1, world) + \
                all_gather_bytes(bits * shard_bytes, world)
            fp32 += allreduce_bytes(4 * d, world)
    counters = record["counters"]
    assert counters["payload_bytes"] == payload
    assert counters["bytes_sent"] == counters["bytes_received"] == moved
    assert counters["bytes_fp32_allreduce"] == fp32
    bits_record = ranks[0]["ddp"]["vote-bits"]["counters"]         # the all-gather: no downlink
    expect = sum(all_gather_bytes(packed_nbytes(sum(sizes[n] for n in names)) + 1, world)
                 for layout in record["layouts"] for names in layout.values())
    assert bits_record["bytes_sent"] == expect


def test_signum_momentum_is_checkpointed_one_gradient_per_rank(launched):
    world, ranks = launched
    spec, options = DDP_CASES["signum"]
    record = ranks[0]["ddp"]["signum"]
    sim, _ = replay(spec, options, world, record["layouts"])
    saved = record["pickled"]["momentum"]
    assert sum(m.numel() for *_, m in saved) == sum(math.prod(s) for s in SHAPES)
    mine = {b: m for (b, r), (_, m) in sim.momentum.items() if r == 0}
    assert {b for b, *_ in saved} == set(mine)
    for bucket, rank, _layout, m in saved:
        assert rank == 0 and torch.equal(m, mine[bucket])


def fsdp_rule(spec: str, world: int) -> list[dict[str, torch.Tensor]]:
    """FSDP2's update from AgentSimulator on FSDP's flat layout, unit by unit (plain)."""
    shapes = {n: p.shape for n, p in LayoutModel().named_parameters()}
    params = {n: torch.zeros(s) for n, s in shapes.items()}
    sim = AgentSimulator(spec, world, seed=7)
    history = []
    for step in range(STEPS):
        per_rank = [grads_for(r, step) for r in range(world)]
        for unit, names in enumerate(UNITS["plain"]):
            flat = torch.stack([fsdp_flat([g[n] for n in names], world) for g in per_rank])
            sgd_from_rows(params, names, sim.reduce_bucket(flat, unit).view(world, -1), world)
        sim.step += 1
        history.append({n: p.clone() for n, p in params.items()})
    return history


@pytest.mark.parametrize("name", list(FSDP_CASES))
def test_fsdp_reduce_scatter_equals_the_simulation(launched, name):
    world, ranks = launched
    history = fsdp_rule(FSDP_CASES[name], world)
    for result in ranks:
        record = result["fsdp"][name]
        for step in range(STEPS):
            for param, want in history[step].items():
                assert torch.equal(record["params"][step][param], want), (name, step, param)


def test_fsdp_signum_holds_one_padded_gradient_shard_set_per_rank(launched):
    world, ranks = launched
    padded = sum(math.ceil(p.shape[0] / world) * world * math.prod(p.shape[1:])
                 for _, p in LayoutModel().named_parameters())
    assert ranks[0]["fsdp-state-bytes"] == 4 * padded
    assert len(ranks[0]["fsdp-pickled"]["momentum"]) == len(UNITS["plain"])


def test_pickled_momentum_resumes_bitwise():
    sim = AgentSimulator("signum:beta=0.9", 3, seed=1)
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 20, generator=gen) for _ in range(4)]
    for g in grads[:2]:
        sim.reduce_bucket(g.clone(), 0)
        sim.step += 1
    resumed = pickle.loads(pickle.dumps(sim))
    assert resumed.state_bytes == sim.state_bytes == 3 * 20 * 4
    for g in grads[2:]:
        a, b = sim.reduce_bucket(g.clone(), 0), resumed.reduce_bucket(g.clone(), 0)
        assert torch.equal(a, b)
        sim.step += 1
        resumed.step += 1
    fresh = AgentSimulator("signum:beta=0.9", 3, seed=1)
    fresh.load_state_dict(sim.state_dict())
    assert torch.equal(fresh.momentum[(0, 1)][1], sim.momentum[(0, 1)][1])


@pytest.mark.parametrize(("spec", "options", "match"), [
    ("dsignsgd:vote=majority", {}, "agents must be at least 2"),
    ("signum:beta=0.9", {"on_nonfinite": "skip"}, "on_nonfinite 'skip' is not supported")])
def test_distributed_refusals(spec, options, match):
    with pytest.raises(ValueError, match=match):
        AgentSimulator(spec, 1 if "vote" in spec else 2, **options)
