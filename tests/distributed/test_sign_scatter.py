"""The sign reduce-scatter wire in one process: bitwise mean of signs, count planes, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from compsde import methods
from compsde.distributed import AgentSimulator, NonFiniteGradientError
from compsde.distributed.wire import (
    CountPlanes,
    allreduce_bytes,
    best_sign_wire,
    count_bits,
    sign_shard,
    sign_wire_traffic,
)

CPU = torch.device("cpu")


def grads_for(agents: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.randn(agents, d, generator=torch.Generator().manual_seed(seed))
    g[:, :3] = 0.0                                 # sign(0) = +1 on the wire
    g[0, min(3, d - 1)] = -0.0
    return g


@pytest.mark.parametrize(("agents", "d"), [(1, 5), (2, 64), (3, 1001), (5, 17), (8, 1000),
                                           (13, 12345), (300, 29)])
@pytest.mark.parametrize("wire", ["scatter", "auto"])
def test_scatter_is_bitwise_the_dsignsgd_direction(agents, d, wire):
    g = grads_for(agents, d, seed=agents + d)
    sim = AgentSimulator("dsignsgd", agents, seed=1, sign_wire=wire)
    got = sim.reduce_bucket(g.clone(), bucket=0)
    assert torch.equal(got, methods.make("dsignsgd").direction(g.clone()))


@pytest.mark.parametrize("world", [1, 2, 7, 8, 255, 256, 1024])
def test_count_planes_round_trip(world):
    shard = 48
    planes = CountPlanes(shard, world, CPU)
    assert planes.nbytes == count_bits(world) * shard // 8
    gen = torch.Generator().manual_seed(world)
    counts = torch.randint(0, world + 1, (world if world < 20 else 3, shard), generator=gen)
    counts[0, :2] = torch.tensor([0, world])                    # both ends of the range
    rows = torch.stack([planes.pack(c, torch.empty(planes.nbytes, dtype=torch.uint8))
                        for c in counts])
    out = torch.empty(counts.numel(), dtype=torch.int32)
    assert torch.equal(planes.unpack_into(rows, out).view_as(counts), counts.int())


def test_count_bits_and_shards():
    assert [count_bits(n) for n in (1, 2, 3, 4, 7, 8, 255, 256, 1024)] == [
        1, 2, 2, 3, 3, 4, 8, 9, 11]
    assert sign_shard(1000, 8) == 128 and sign_shard(1, 8) == 8 and sign_shard(64, 8) == 8


def test_traffic_by_hand():
    # d = 8000, N = 8: shards of 1000 coordinates (125 bytes + 1 status), counts in 4 bits
    assert sign_wire_traffic("scatter", 8000, 8) == (8 * 126 + 500, 7 * 126 + 7 * 500)
    assert sign_wire_traffic("bits", 8000, 8) == (1001, 7 * 1001)
    assert sign_wire_traffic("int8", 8000, 8) == (8001, 2 * 7 / 8 * 8001)
    with pytest.raises(ValueError, match="sign_wire must be one of"):
        sign_wire_traffic("int16", 10, 2)


def test_auto_picks_the_fewest_bytes():
    d = 1 << 20
    assert [best_sign_wire(d, n) for n in (1, 2, 3, 4, 5, 8, 64, 1024)] == [
        "bits", "bits", "bits", "bits", "scatter", "scatter", "scatter", "scatter"]
    assert best_sign_wire(7, 8) == "bits"          # one byte each: padding outweighs shards
    for n in range(2, 1025):
        best = min(sign_wire_traffic(w, d, n)[1] for w in ("bits", "scatter"))
        assert sign_wire_traffic(best_sign_wire(d, n), d, n)[1] <= best


@pytest.mark.parametrize("world", [2, 5, 8, 64, 127, 128, 1024])
def test_sign_bytes_within_the_target_of_fp32_allreduce(world):
    """Target: ≤ (1 + ⌈log₂(N + 1)⌉)/64 of an fp32 ring allreduce. For a 10⁷ bucket the
    status byte per message and the padding to N whole-byte shards add at most 0.2 % (1/1222
    and 2432/10⁷ at N = 1024)."""
    d = 10_000_000
    moved = sign_wire_traffic(best_sign_wire(d, world), d, world)[1]
    bound = (1 + math.ceil(math.log2(world + 1))) / 64
    assert moved <= bound * allreduce_bytes(4 * d, world) * 1.002
    if world <= 127:
        assert moved <= allreduce_bytes(4 * d, world) / 8 * 1.002


def test_nonfinite_gradient_reaches_every_shard():
    g = grads_for(8, 100)
    g[5, 90] = float("nan")                        # in the last shard
    sim = AgentSimulator("dsignsgd", 8, sign_wire="scatter")
    with pytest.raises(NonFiniteGradientError, match="1 rank"):
        sim.reduce_bucket(g.clone(), 0)
    skip = AgentSimulator("dsignsgd", 8, sign_wire="scatter", on_nonfinite="skip")
    assert not skip.reduce_bucket(g.clone(), 0).any() and skip.skipped


def test_counters_of_the_simulation():
    sim = AgentSimulator("dsignsgd", 8, sign_wire="scatter")
    sim.reduce_bucket(grads_for(8, 8000), 0)
    assert sim.counters()["bytes_sent"] == 7 * 126 + 7 * 500
    assert sim.counters()["payload_bytes"] == 8 * 126 + 500
    # the codec timer counts encode and decode, and stays out of the byte counters and the
    # pickled state (a timer, not state a resumed run must reproduce)
    assert sim.codec_seconds > 0
    assert "codec_seconds" not in sim.counters() and "codec_seconds" not in sim.__getstate__()


@pytest.mark.parametrize("world", [2, 5, 8])
@pytest.mark.parametrize(("spec", "options"), [
    ("dsgd", {}), ("dsignsgd", {}), ("dsignsgd", {"sign_wire": "int8"}),
    ("dsignsgd", {"sign_wire": "bits"}), ("dcsgd:randk:ratio=0.01", {}),
    ("dcsgd:randk:ratio=0.01", {"randomness": "independent"}), ("dcsgd:qsgd:levels=4", {}),
    ("dcsgd:natural", {})])
def test_bucket_traffic_is_what_the_codecs_count(world, spec, options):
    """The advisor's sizes (wire.bucket_traffic) are the counters of the codecs' run."""
    from compsde.distributed.wire import bucket_traffic

    d = 3000
    sim = AgentSimulator(spec, world, seed=2, **options)
    sim.reduce_bucket(grads_for(world, d), 0)
    method = methods.make(spec)
    _, payload, moved = bucket_traffic(method.name, method.compressor, d, world, **options)
    assert sim.counters()["payload_bytes"] == payload
    assert sim.counters()["bytes_sent"] == pytest.approx(moved, rel=1e-12)
