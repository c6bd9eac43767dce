"""The sign reduce-scatter with its counts as base-(N+1) digits (``sign_wire="digits"``): the
same mean of signs bitwise, the bytes of its formula, fewer than bit planes where N + 1 is far
below a power of two, and no majority vote."""

from __future__ import annotations

import math

import pytest
import torch

from compsde.distributed import AgentSimulator
from compsde.distributed.wire import (
    best_sign_wire,
    digits_per_word,
    sign_shard,
    sign_wire_traffic,
)
from compsde.methods import make


@pytest.mark.parametrize("world", [2, 3, 4, 5, 7, 8, 9, 16, 17, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_digits_give_the_mean_of_signs_bitwise(world, dtype):
    d = 1000 + 37 * world
    grads = torch.randn(world, d, generator=torch.Generator().manual_seed(world), dtype=dtype)
    grads[0, :9] = 0.0                                 # sign(0) = +1 on every wire
    want = make("dsignsgd").direction(grads.clone().unsqueeze(0))[0]
    sim = AgentSimulator("dsignsgd", world, seed=0, sign_wire="digits")
    assert torch.equal(sim.reduce_bucket(grads.clone(), 0), want)
    nbytes, moved = sign_wire_traffic("digits", d, world)
    assert sim.counters()["bytes_sent"] == moved and sim.counters()["payload_bytes"] == nbytes


@pytest.mark.parametrize("world", range(2, 64))
def test_a_word_holds_as_many_counts_as_fit(world):
    k = digits_per_word(world)
    assert (world + 1) ** k <= 2**63 < (world + 1) ** (k + 1)


def test_digits_beat_bit_planes_where_n_plus_one_is_far_from_a_power_of_two():
    d = 10**6
    fp32 = {n: 2 * (n - 1) / n * 4 * d for n in (4, 8)}
    ratio = {n: sign_wire_traffic("digits", d, n)[1] / fp32[n] for n in (4, 8)}
    planes = {n: sign_wire_traffic("scatter", d, n)[1] / fp32[n] for n in (4, 8)}
    assert ratio[4] < 1 / 16 <= planes[4] and ratio[8] < planes[8]
    shard = sign_shard(d, 4)
    assert ratio[4] == pytest.approx(3 * (shard / 8 + 1 + 8 * math.ceil(shard / 27)) / fp32[4])
    assert best_sign_wire(d, 4) == "bits"              # DDP's auto keeps its wires
    assert best_sign_wire(d, 4, wires=("bits", "int8", "scatter", "digits")) == "digits"


def test_the_vote_is_refused_on_digits():
    with pytest.raises(ValueError, match="sign_wire 'digits' carries counts"):
        AgentSimulator("dsignsgd:vote=majority", 3, sign_wire="digits")
