"""HSDP on a (2, 2) mesh of 4 gloo ranks: the reduce-scatter within a node stays the exact
mean, the all-reduce across the R = 2 nodes is the method (tests/distributed/hsdp_worker.py).

The reference computes, for every unit and shard, the node means of the known per-rank
gradients and runs the method over the R nodes in AgentSimulator (one agent per node).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ddp_spawn import rank_records  # noqa: E402
from fsdp_layouts import STEPS, UNITS, LayoutModel, grads_for, sgd_from_rows  # noqa: E402
from hsdp_worker import CASES, MESH  # noqa: E402

from compsde.distributed import AgentSimulator, HSDPState  # noqa: E402
from compsde.distributed.fsdp import fsdp_flat, reduce_scatter_bytes  # noqa: E402
from compsde.distributed.wire import (  # noqa: E402
    all_gather_bytes,
    allreduce_bytes,
    best_sign_wire,
    packed_nbytes,
    sign_wire_traffic,
)

R, S = MESH


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("hsdp")
    return rank_records(HERE / "hsdp_worker.py", R * S, out, timeout=300)


SHAPES = {n: p.shape for n, p in LayoutModel().named_parameters()}


def shard_numel(names: list[str], shards: int = S) -> int:
    return sum(math.ceil(SHAPES[n][0] / shards) * math.prod(SHAPES[n][1:]) for n in names)


def simulate(spec: str, options: dict, R: int = R, S: int = S
             ) -> list[dict[str, torch.Tensor]]:
    """Node means (exact), then the method over the R nodes, shard by shard."""
    params = {n: torch.zeros(s) for n, s in SHAPES.items()}
    sim = AgentSimulator(spec, R, seed=7, **options)
    history = []
    for step in range(STEPS):
        grads = [grads_for(r, step) for r in range(R * S)]
        for unit, names in enumerate(UNITS["plain"]):
            nodes = [sum(fsdp_flat([grads[n * S + j][p] for p in names], S) for j in range(S))
                     / S for n in range(R)]
            rows = []
            for shard in range(S):
                stacked = torch.stack([node.view(S, -1)[shard] for node in nodes])
                rows.append(sim.reduce_bucket(stacked, unit * S + shard))
            sgd_from_rows(params, names, torch.stack(rows), S)
        sim.step += 1
        history.append({n: p.clone() for n, p in params.items()})
    return history


@pytest.mark.parametrize("name", list(CASES))
def test_hsdp_update_is_node_means_then_the_method_across_nodes(ranks, name):
    spec, options = CASES[name]
    history = simulate(spec, options)
    for result in ranks:
        record = result[name]
        for step in range(STEPS):
            for param, want in history[step].items():
                assert torch.equal(record["params"][step][param], want), (name, step, param)
        assert record["step"] == STEPS
        assert (record["world"], record["shards"]) == (R, S)
        assert record["units"] == ["a", "b", "c"]


def test_bytes_per_dimension_equal_the_analytic_counts(ranks):
    shards = [shard_numel(names) for names in UNITS["plain"]]
    node = STEPS * sum(reduce_scatter_bytes(4 * S * m, S) for m in shards)
    fp32 = STEPS * sum(allreduce_bytes(4 * m, R) for m in shards)
    bits = STEPS * sum(all_gather_bytes(packed_nbytes(m) + 1, R) for m in shards)
    for result in ranks:
        for name in CASES:
            counters = result[name]["counters"]
            assert counters["bytes_shard_sent"] == pytest.approx(node, rel=1e-12)
            assert counters["bytes_fp32_allreduce"] == pytest.approx(fp32, rel=1e-12)
            assert result[name]["dimensions"] == {"replicate": counters["bytes_sent"],
                                                  "shard": counters["bytes_shard_sent"]}
        assert result["dsgd"]["counters"]["bytes_sent"] == pytest.approx(fp32, rel=1e-12)
        sign = result["dsignsgd"]["counters"]["bytes_sent"]
        assert sign == pytest.approx(bits, rel=1e-12)
        assert sign <= fp32 / 16


def test_state_dict_resume_equals_an_uninterrupted_run(ranks):
    for result in ranks:
        resume = result["resume"]
        assert resume["step"] == 4
        for param, want in resume["straight"].items():
            assert torch.equal(resume["resumed"][param], want), param


def test_meshes_the_methods_cannot_serve_are_clear_errors(ranks):
    refused = ranks[0]["refused"]
    assert refused["names"].startswith("mesh must be a DeviceMesh of shape (R, S) with "
                                       "mesh_dim_names=('replicate', 'shard')")
    assert "('dp', 'tp')" in refused["names"]
    assert "R = 1" in refused["one-replica"]
    assert refused["group"].startswith("process_group holds ranks [0]")


def test_four_nodes_take_the_digits_wire_at_its_bytes(ranks):
    """R = 4: the counts as base-5 digits move 0.053 of HSDP fp32's bytes (bit planes: 1/16)."""
    history = simulate("dsignsgd", {"sign_wire": "digits"}, R=4, S=1)
    shards = [shard_numel(names, 1) for names in UNITS["plain"]]
    wires = [best_sign_wire(m, 4, wires=HSDPState.auto_sign_wires) for m in shards]
    assert "digits" in wires                  # the large units (small ones: the bit all-gather)
    sent = STEPS * sum(sign_wire_traffic(w, m, 4)[1] for w, m in zip(wires, shards, strict=True))
    fp32 = STEPS * sum(allreduce_bytes(4 * m, 4) for m in shards)
    for result in ranks:
        record = result["dsignsgd-4x1"]
        assert "SignDigitsCodec" in record["wires"] and record["step"] == STEPS
        for step in range(STEPS):
            for param, want in history[step].items():
                assert torch.equal(record["params"][step][param], want), (step, param)
        assert record["counters"]["bytes_sent"] == pytest.approx(sent, rel=1e-12)
        assert record["counters"]["bytes_sent"] <= fp32 / 16
