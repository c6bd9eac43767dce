"""Every FSDP2 layout frameworks produce (grouped units, the root alone, nested units, frozen
and ignored parameters, no resharding, mixed precision, gradient accumulation) on 1 and 2 gloo
ranks, against the in-process simulation of the same method on FSDP's flat layout.

One launch per world size runs every case (tests/distributed/layout_worker.py); the reference
replays the known per-rank gradients through AgentSimulator, unit by unit, with the partition
into units written out by hand in fsdp_layouts.UNITS.
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
from fsdp_layouts import (  # noqa: E402
    FROZEN,
    IGNORED,
    LR,
    METHODS,
    STEPS,
    UNITS,
    LayoutModel,
    grads_for,
    sgd_from_rows,
)

from compsde.compressors import make as make_compressor  # noqa: E402
from compsde.distributed import AgentSimulator  # noqa: E402
from compsde.distributed.fsdp import fsdp_flat  # noqa: E402

CASES = [(layout, name) for layout in UNITS for name in METHODS]


@pytest.fixture(scope="module", params=(1, 2), ids=lambda w: f"world{w}")
def launched(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"layouts{world}")
    return world, rank_records(HERE / "layout_worker.py", world, out, timeout=300)


def rank_grads(layout: str, rank: int, step: int) -> dict[str, torch.Tensor]:
    grads = grads_for(rank, step)
    if layout == "accumulate":                     # two micro-batches, one reduction
        grads = {n: g + grads_for(rank, step, micro=1)[n] for n, g in grads.items()}
    if layout == "mixed":                          # computed in bf16, reduced in fp32
        grads = {n: g.to(torch.bfloat16).float() for n, g in grads.items()}
    return grads


def simulate(layout: str, spec: str, world: int) -> list[dict[str, torch.Tensor]]:
    """Parameters after every step: each unit's trainable parameters are one message."""
    shapes = {n: p.shape for n, p in LayoutModel().named_parameters()}
    params = {n: torch.zeros(s) for n, s in shapes.items()}
    frozen = set(FROZEN.get(layout, []))
    sim = AgentSimulator(spec, world, seed=7)
    history = []
    for step in range(STEPS):
        per_rank = [rank_grads(layout, r, step) for r in range(world)]
        for unit, names in enumerate(UNITS[layout]):
            names = [n for n in names if n not in frozen]
            if not names:
                continue
            flat = torch.stack([fsdp_flat([g[n] for n in names], world) for g in per_rank])
            sgd_from_rows(params, names, sim.reduce_bucket(flat, unit).view(world, -1), world)
        for name in IGNORED.get(layout, []):       # FSDP leaves their gradients local
            params[name].add_(per_rank[0][name], alpha=-LR)
        sim.step += 1
        history.append({n: p.clone() for n, p in params.items()})
    return history


@pytest.mark.parametrize(("layout", "name"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_layout_update_equals_the_simulation(launched, layout, name):
    world, ranks = launched
    record = ranks[0][(layout, name)]
    history = simulate(layout, METHODS[name], world)
    for step in range(STEPS):
        for param, want in history[step].items():
            assert torch.equal(record["params"][step][param], want), (layout, name, step, param)
    assert record["step"] == STEPS


@pytest.mark.parametrize("layout", list(UNITS))
def test_units_are_the_fully_shard_calls(launched, layout):
    _world, ranks = launched
    for result in ranks:
        record = result[(layout, "dsignsgd")]
        assert record["units"] == UNITS[layout]
        assert len(record["state_units"]) == len(UNITS[layout])
        ignored = IGNORED.get(layout, [])
        assert any(all(n in w for n in ignored) for w in record["warnings"]) == bool(ignored)


def test_ranks_agree_on_sharded_parameters(launched):
    _world, ranks = launched
    for key in CASES:
        ignored = set(IGNORED.get(key[0], []))
        for result in ranks[1:]:
            for param, value in result[key]["params"][-1].items():
                if param not in ignored:
                    assert torch.equal(value, ranks[0][key]["params"][-1][param]), key


def test_randk_keeps_new_coordinates_every_step(launched):
    """Fraction of entries Rand-k 0.25 ever updated in S = 8 steps ≈ 1 − (1 − k/d)^S per unit
    (0.90; a key stuck at one step keeps 0.25). Tolerance 5 binomial se over the entries."""
    world, ranks = launched
    shapes = {n: p.shape for n, p in LayoutModel().named_parameters()}
    randk = make_compressor("randk:ratio=0.25")
    entries = expected = 0.0
    for names in UNITS["grouped"]:
        real = sum(math.prod(shapes[n]) for n in names)
        d = sum(math.ceil(shapes[n][0] / world) * world * math.prod(shapes[n][1:]) for n in names)
        keep = randk.k_for(d) / d
        entries += real
        expected += real * (1 - (1 - keep) ** 8)
    expected /= entries
    se = math.sqrt(expected * (1 - expected) / entries)
    for result in ranks:
        assert abs(result["coverage"] - expected) <= 5 * se, (result["coverage"], expected)


def test_refusals_are_clear(launched):
    world, ranks = launched
    refused = ranks[0]["refused"]
    assert refused["twice"].startswith("model: compsde is already registered")
    assert refused["ddp-twice"].startswith("ddp_model: compsde is already registered")
    assert refused["param-dtype"].startswith("param_dtype")
    assert "torch.bfloat16 is not supported by dcsgd:qsgd" in refused["param-dtype"]
    if world > 1:
        assert refused["group"].startswith("process_group holds ranks [0]")


def test_a_step_with_a_unit_missing_is_an_error(launched):
    _world, ranks = launched
    for result in ranks:
        message = result["step-errors"]["missing"]
        assert message.startswith("step 0 ended with FSDP units c not reduced")
