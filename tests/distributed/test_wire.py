"""In-process checks of the wire, the codecs and AgentSimulator against compsde.methods."""

from __future__ import annotations

import pickle

import pytest
import torch

from compsde import compressors, methods
from compsde.compressors import bits
from compsde.distributed import AgentSimulator, ddp_layout
from compsde.distributed.protocol import Protocol
from compsde.distributed.wire import (
    SHARED,
    SignCounter,
    SignPacker,
    all_gather_bytes,
    allreduce_bytes,
    derive_seed,
    generator_for,
    packed_nbytes,
)
from compsde.nn.models import make_model

CPU = torch.device("cpu")


def grads_for(agents: int, d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(agents, d, generator=gen)
    g[:, :3] = 0.0                                 # sign(0) = +1 on the wire
    g[0, 3] = -0.0
    return g


def test_derive_seed_is_deterministic_and_separates_keys():
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3)
    seeds = {derive_seed(s, k, b, r) for s in range(3) for k in range(5) for b in range(4)
             for r in (SHARED, 0, 1)}
    assert len(seeds) == 3 * 5 * 4 * 3
    assert all(0 <= s < 2**63 for s in seeds)
    a = generator_for(0, 1, 2)
    b = generator_for(0, 1, 2)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


@pytest.mark.parametrize("d", [1, 8, 13, 1000])
def test_sign_packer_matches_the_compressor_wire(d):
    x = grads_for(1, d)[0] if d > 4 else torch.tensor([0.0, -1.0, 2.0, -0.0])[:d]
    out = torch.empty(packed_nbytes(d), dtype=torch.uint8)
    SignPacker(d, CPU).pack(x, out)
    assert torch.equal(out, bits.pack_signs(x))
    assert torch.equal(out, compressors.make("sign").encode(x).payload)


@pytest.mark.parametrize(("agents", "d"),
                         [(1, 5), (2, 64), (2, 1001), (3, 1001), (5, 17), (300, 29)])
def test_sign_counter_is_bitwise_the_dsignsgd_direction(agents, d):
    g = grads_for(agents, d, seed=agents)
    gathered = torch.stack([bits.pack_signs(row) for row in g])
    out = torch.empty(d)
    SignCounter(d, agents, CPU).mean_signs(gathered, out)
    assert torch.equal(out, methods.make("dsignsgd").direction(g.clone()))


def _reduce(spec: str, g: torch.Tensor, **options) -> tuple[torch.Tensor, AgentSimulator]:
    sim = AgentSimulator(spec, g.shape[0], seed=11, **options)
    return sim.reduce_bucket(g.clone(), bucket=0), sim


@pytest.mark.parametrize("wire", ["bits", "int8"])
def test_simulated_dsignsgd_equals_methods_bitwise(wire):
    g = grads_for(4, 777)
    got, _ = _reduce("dsignsgd", g, sign_wire=wire)
    assert torch.equal(got, methods.make("dsignsgd").direction(g.clone()))


def test_simulated_dsgd_equals_methods():
    g = grads_for(3, 500)
    got, _ = _reduce("dsgd", g)
    torch.testing.assert_close(got, methods.make("dsgd").direction(g.clone()))


def test_shared_randk_keeps_the_same_coordinates_for_every_agent():
    g = grads_for(3, 400)
    got, _ = _reduce("dcsgd:randk:k=40", g)
    comp = compressors.make("randk:k=40")
    index = comp.indices(400, generator_for(11, 0, 0, SHARED))
    want = torch.zeros(400)
    want[index] = g[:, index].sum(0) * (400 / 40 / 3)
    assert torch.equal(got != 0, want != 0)
    torch.testing.assert_close(got, want)
    # the payload is RandK's wire format: the kept values, unscaled
    payload = comp.encode(g[0], generator_for(11, 0, 0, SHARED)).payload
    assert torch.equal(payload, g[0, index])


@pytest.mark.parametrize("spec", ["randk:k=40", "bernoulli:p=0.2", "qsgd:levels=4", "natural"])
def test_independent_compressors_equal_the_mean_of_compressed_gradients(spec):
    g = grads_for(3, 400)
    options = {"randomness": "independent"} if spec.split(":")[0] in ("randk",
                                                                       "bernoulli") else {}
    got, _ = _reduce(f"dcsgd:{spec}", g, **options)
    comp = compressors.make(spec)
    want = torch.stack([comp(g[i], generator_for(11, 0, 0, i)) for i in range(3)]).mean(0)
    torch.testing.assert_close(got, want)


def test_independent_randk_is_unbiased():
    """E[mean_i C_i(g_i)] = mean_i g_i; |mean − x| ≤ 5 se over 2000 steps."""
    g = grads_for(2, 20)
    sim = AgentSimulator("dcsgd:randk:k=4", 2, seed=3, randomness="independent")
    draws = torch.stack([sim.reduce({"w": g.clone()}, {0: ("w",)})["w"] for _ in range(2000)])
    se = draws.std(0) / draws.shape[0] ** 0.5
    assert ((draws.mean(0) - g.mean(0)).abs() <= 5 * se + 1e-12).all()


def test_injected_noise_has_the_per_rank_scales():
    """DSGD on zero gradients returns mean_i Z_i: variance (1² + 3²)/4 per coordinate."""
    sim = AgentSimulator("dsgd", 2, seed=0, noise="gaussian:scale=1/3")
    out = sim.reduce_bucket(torch.zeros(2, 40_000), 0)
    var, n = out.var().item(), out.numel()
    se = 2.5 * (2 / (n - 1)) ** 0.5
    assert abs(var - 2.5) <= 5 * se


def test_counters_follow_the_ring_formulas():
    g = grads_for(4, 1000)
    _, sim = _reduce("dsignsgd", g)
    assert sim.payload_bytes == 125 + 1
    assert sim.bytes_sent == all_gather_bytes(126, 4) == 3 * 126
    assert sim.bytes_fp32_allreduce == allreduce_bytes(4000, 4) == 6000
    assert allreduce_bytes(100, 1) == 0.0


def test_state_pickles_and_restores():
    sim = AgentSimulator("dcsgd:randk:ratio=0.1", 2, seed=5, noise="student-t:nu=1,scale=2")
    sim.reduce({"w": torch.ones(2, 50)}, {0: ("w",)})
    clone = pickle.loads(pickle.dumps(sim))
    assert clone.step == sim.step == 1 and clone.counters() == sim.counters()
    assert clone.method.spec == "dcsgd:randk:ratio=0.1" and clone.noise_spec == sim.noise_spec
    a = sim.reduce({"w": torch.ones(2, 50)}, {0: ("w",)})["w"]
    b = clone.reduce({"w": torch.ones(2, 50)}, {0: ("w",)})["w"]
    assert torch.equal(a, b)


def test_global_rng_untouched():
    state = torch.get_rng_state()
    _reduce("dcsgd:qsgd:levels=2", grads_for(2, 100), )
    _reduce("dcsgd:randk:k=5", grads_for(2, 100))
    AgentSimulator("dsgd", 2, noise="gaussian:scale=1").reduce_bucket(torch.zeros(2, 9), 0)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "adam"}, "method must be one of"),
    ({"method": "dcsgd:nope"}, "compressor must be one of"),
    ({"method": "dcsgd:topk:ratio=0.1"}, "must be unbiased"),
    ({"method": "dsignsgd", "sign_wire": "int16"}, "sign_wire must be one of"),
    ({"method": "dsignsgd", "sign_wire": "int8", "world": 256}, "at most 255"),
    ({"method": "dcsgd:randk:k=2", "randomness": "private"}, "randomness must be one of"),
    ({"method": "dsgd", "on_nonfinite": "ignore"}, "on_nonfinite must be one of"),
    ({"method": "dsgd", "noise": "gaussian:scale=1/2/3", "world": 2}, "one per rank"),
    ({"method": "dsgd", "seed": -1}, "seed must be"),
])
def test_bad_options_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Protocol(**kwargs)


def test_k_larger_than_the_bucket_and_wrong_shapes():
    sim = AgentSimulator("dcsgd:randk:k=50", 2)
    with pytest.raises(ValueError, match=r"keeps k=50 coordinates but bucket 0 has only d=20"):
        sim.reduce_bucket(torch.ones(2, 20), 0)
    with pytest.raises(ValueError, match="agents=2"):
        sim.reduce_bucket(torch.ones(3, 20), 0)


def test_nonfinite_raise_and_skip():
    from compsde.distributed import NonFiniteGradientError

    g = grads_for(2, 30)
    g[1, 7] = float("inf")
    with pytest.raises(NonFiniteGradientError, match="non-finite gradient at step 0"):
        _reduce("dsignsgd", g)
    out, sim = _reduce("dcsgd:randk:k=3", g, on_nonfinite="skip")
    assert sim.skipped and sim.skipped_steps == [0] and not out.any()


def test_ddp_layout_covers_every_parameter_once():
    model = make_model("resnet", (3, 32, 32), 10)
    layout = ddp_layout(model, bucket_cap_mb=0.05)
    names = [n for bucket in layout.values() for n in bucket]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(layout) > 2
    assert layout[0][0] == "head.bias"
