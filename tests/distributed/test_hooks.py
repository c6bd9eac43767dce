"""DDP hooks on 2, 4 and 8 gloo ranks vs the in-process simulation of the same method.

One launch per world size runs every case (tests/distributed/hook_worker.py; at 8 ranks the
sign wires, Rand-k and the non-finite policy of the reduce-scatter); the tests replay the same
per-rank gradients, seeds and bucket layouts through AgentSimulator and compare.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ddp_cases import (  # noqa: E402
    ACCUMULATE_CASES,
    ERROR_CASES,
    LR,
    MICRO_OFFSET,
    MLP_CAP_MB,
    SHAPES,
    STEPS,
    WORLD8_CASES,
    cases,
    mlp_batch,
    mlp_model,
    rank_grads,
)
from ddp_spawn import describe, run_ranks  # noqa: E402

from compsde.distributed import AgentSimulator, ddp_layout  # noqa: E402
from compsde.distributed.wire import all_gather_bytes, allreduce_bytes  # noqa: E402

WORLDS = (2, 4, 8)
NAMES = [f"weights.{i}" for i in range(len(SHAPES))]


@pytest.fixture(scope="module", params=WORLDS, ids=lambda w: f"world{w}")
def launched(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"hooks{world}")
    argv = [str(HERE / "hook_worker.py"), str(out)]
    if world == 8:
        argv.append(",".join(WORLD8_CASES))
    results = run_ranks(argv, world, out, timeout=240)
    assert all(r.returncode == 0 for r in results), describe(results)
    return world, [torch.load(out / f"rank{r}.pt") for r in range(world)]


def case_records(ranks: list[dict], name: str) -> list[dict]:
    """Every rank's record of ``name``; skips cases the launch of this world size left out."""
    if name not in ranks[0]:
        pytest.skip(f"{name} is not run at {len(ranks)} ranks (WORLD8_CASES)")
    return [rank[name] for rank in ranks]


def simulate(world: int, spec: str, options: dict, layouts: list[dict], nan_step=None,
             accumulate: bool = False):
    """Replay the worker's run in one process: same gradients, seed, layouts, SGD steps."""
    sim = AgentSimulator(spec, world, seed=7, **options)
    params = [torch.zeros(s) for s in SHAPES]
    history = []
    for step in range(STEPS):
        per_rank = [rank_grads(r, step) for r in range(world)]
        if accumulate:               # DDP adds the no_sync micro-batch's gradient in place
            per_rank = [[micro + g for micro, g in zip(rank_grads(r, step + MICRO_OFFSET), gs,
                                                       strict=True)]
                        for r, gs in enumerate(per_rank)]
        if nan_step == step:
            per_rank[-1][0][5] = float("nan")
        grads = {n: torch.stack([g[i] for g in per_rank]) for i, n in enumerate(NAMES)}
        mean = sim.reduce(grads, layouts[step])
        if not sim.skipped:
            opt = torch.optim.SGD(params, lr=LR)   # plain SGD: the same p.add_(g, alpha=-lr)
            for p, n in zip(params, NAMES, strict=True):
                p.grad = mean[n].clone()
            opt.step()
        history.append([p.clone() for p in params])
    return sim, history


def exact_case(name: str, world: int) -> bool:
    """Bitwise expected: signs always; sums when N = 2 (a + b = b + a exactly)."""
    return name.startswith("dsignsgd") or world == 2


@pytest.mark.parametrize("name", list(cases(4)))
def test_hook_matches_simulation(launched, name):
    world, ranks = launched
    spec, options = cases(world)[name]
    record = case_records(ranks, name)[0]
    assert "error" not in record, record["error"]
    assert len(record["layouts"][-1]) >= 2, "the model must span several DDP buckets"
    sim, history = simulate(world, spec, options, record["layouts"])
    for step in range(STEPS):
        for got, want in zip(record["params"][step], history[step], strict=True):
            if exact_case(name, world):
                assert torch.equal(got, want), (name, step)
            else:
                assert torch.equal(got != 0, want != 0), (name, step)   # same kept coords
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert record["step"] == sim.step == STEPS
    assert record["counters"] == sim.counters()


@pytest.mark.parametrize("name", [*cases(4), "mlp"])
def test_every_rank_holds_identical_parameters(launched, name):
    _world, ranks = launched
    records = case_records(ranks, name)
    for other in records[1:]:
        for got, want in zip(other["params"][-1], records[0]["params"][-1], strict=True):
            assert torch.equal(got, want), name


def test_real_model_dsignsgd_bitwise(launched):
    """DSignSGD through real forward/backward passes of an MLP equals the simulation."""
    world, ranks = launched
    record = case_records(ranks, "mlp")[0]
    assert len(record["layouts"][-1]) >= 2
    assert record["layouts"][-1] == ddp_layout(mlp_model(), MLP_CAP_MB)   # after DDP's rebuild
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = mlp_model()
        sim = AgentSimulator("dsignsgd", world, seed=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        named = dict(model.named_parameters())
        for step in range(STEPS):
            grads = {n: torch.empty((world, *p.shape)) for n, p in named.items()}
            for rank in range(world):
                model.zero_grad()
                x, y = mlp_batch(rank, step)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                for n, p in named.items():
                    grads[n][rank] = p.grad
            mean = sim.reduce(grads, record["layouts"][step])
            for n, p in named.items():
                p.grad = mean[n].clone()
            opt.step()
            for got, want in zip(record["params"][step], model.parameters(), strict=True):
                assert torch.equal(got, want.detach()), step
    finally:
        torch.set_num_threads(threads)


def _bucket_sizes(layout: dict) -> list[int]:
    size = {n: torch.Size(s).numel() for n, s in zip(NAMES, SHAPES, strict=True)}
    return [sum(size[n] for n in names) for _, names in sorted(layout.items())]


def _sign_scatter_sizes(d: int, world: int) -> tuple[int, float]:
    """All-to-all of N messages of s/8 sign bytes + 1 status byte, all-gather of b·s/8 count
    bytes, s = d rounded up to N whole-byte shards, b = ⌈log₂(N + 1)⌉."""
    shard_bytes = math.ceil(d / (8 * world))
    bits = math.ceil(math.log2(world + 1))
    return (world * (shard_bytes + 1) + bits * shard_bytes,
            (world - 1) * (shard_bytes + 1) + (world - 1) * bits * shard_bytes)


@pytest.mark.parametrize("name", ["dsgd", "dsignsgd", "dsignsgd-int8", "dsignsgd-bits",
                                  "dsignsgd-scatter", "randk", "qsgd", "natural",
                                  "randk-independent"])
def test_byte_counters_equal_analytic_sizes(launched, name):
    world, ranks = launched
    record = case_records(ranks, name)[0]
    # "auto": the bit all-gather up to 4 ranks (ties included), the reduce-scatter beyond
    wire = {"dsignsgd": "bits" if world <= 4 else "scatter", "dsignsgd-bits": "bits",
            "dsignsgd-scatter": "scatter"}.get(name)
    sent = fp32 = 0.0
    payload = 0
    for layout in record["layouts"]:
        for d in _bucket_sizes(layout):
            if name == "dsgd":
                size, moved = 4 * d, allreduce_bytes(4 * d, world)
            elif name.startswith("dsignsgd-int8"):
                size, moved = d + 1, allreduce_bytes(d + 1, world)
            elif wire == "bits":
                size = (d + 7) // 8 + 1
                moved = all_gather_bytes(size, world)
            elif wire == "scatter":
                size, moved = _sign_scatter_sizes(d, world)
            elif name.startswith("randk"):
                k = max(1, round(0.05 * d))
                size = 4 * (k + 1)
                moved = (allreduce_bytes(size, world) if name == "randk"
                         else all_gather_bytes(size, world))
            elif name == "qsgd":     # fp32 norm + (sign, 3-bit level) per coordinate
                size = 4 + (4 * d + 7) // 8 + 1
                moved = all_gather_bytes(size, world)
            else:                    # natural: sign + 8-bit exponent per coordinate
                size = (9 * d + 7) // 8 + 1
                moved = all_gather_bytes(size, world)
            payload += size
            sent += moved
            fp32 += allreduce_bytes(4 * d, world)
    counters = record["counters"]
    assert counters["payload_bytes"] == payload
    assert counters["bytes_sent"] == pytest.approx(sent, rel=1e-12)
    assert counters["bytes_received"] == pytest.approx(sent, rel=1e-12)
    assert counters["bytes_fp32_allreduce"] == pytest.approx(fp32, rel=1e-12)
    if name == "dsignsgd":     # ≤ (1 + ⌈log₂(N + 1)⌉)/64 of fp32 allreduce, padding aside
        bound = (1 + math.ceil(math.log2(world + 1))) / 64
        assert counters["bytes_sent"] <= counters["bytes_fp32_allreduce"] * bound * 1.01


@pytest.mark.parametrize("name", ["nan-raise-sign", "nan-raise-dsgd", "nan-raise-randk",
                                  "nan-raise-scatter"])
def test_nonfinite_gradient_raises_on_every_rank(launched, name):
    _world, ranks = launched
    for record in case_records(ranks, name):
        assert "non-finite gradient at step 1" in record["error"], record.get("error")
        assert len(record["params"]) == 1          # step 0 done, step 1 raised


@pytest.mark.parametrize("name", ["nan-skip-sign", "nan-skip-qsgd", "nan-skip-scatter"])
def test_nonfinite_gradient_skip(launched, name):
    world, ranks = launched
    spec, options, nan_step = ERROR_CASES[name]
    for record in case_records(ranks, name):
        assert record["skipped_steps"] == [1] and record["skipped"] == [False, True, False]
        assert all(torch.equal(a, b) for a, b in zip(record["params"][0],
                                                     record["params"][1], strict=True))
    _, history = simulate(world, spec, options, ranks[0][name]["layouts"], nan_step=nan_step)
    for got, want in zip(ranks[0][name]["params"][-1], history[-1], strict=True):
        if name.endswith(("sign", "scatter")):
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_k_larger_than_bucket_is_a_clear_error_on_every_rank(launched):
    _world, ranks = launched
    for record in case_records(ranks, "k-too-large"):
        error = record["error"]
        assert error.startswith("ValueError: compressor randk:k=50000 keeps k=50000")
        assert "bucket" in error


def test_state_pickles_for_checkpoints(launched):
    world, ranks = launched
    state = case_records(ranks, "randk")[0]["pickled"]
    assert state["step"] == STEPS and state["seed"] == 7 and state["world"] == world
    assert state["method_spec"] == "dcsgd:randk:ratio=0.05"


@pytest.mark.parametrize("name", list(ACCUMULATE_CASES))
def test_gradient_accumulation_under_no_sync_is_one_step(launched, name):
    """A micro-step under ``no_sync()`` reduces nothing; the next backward reduces the sum once:
    ``state.step`` counts optimizer steps and the update is the method of the summed gradient."""
    world, ranks = launched
    spec, options = ACCUMULATE_CASES[name]
    record = case_records(ranks, name)[0]
    _, history = simulate(world, spec, options, record["layouts"], accumulate=True)
    for step in range(STEPS):
        for got, want in zip(record["params"][step], history[step], strict=True):
            if exact_case(name, world):
                assert torch.equal(got, want), (name, step)
            else:
                assert torch.equal(got != 0, want != 0), (name, step)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert record["step"] == STEPS
