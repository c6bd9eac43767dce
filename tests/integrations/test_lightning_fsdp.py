"""compsde.lightning.Compression under Lightning's ModelParallelStrategy (FSDP2) on 2 gloo
ranks: the LightningModule's ``self.net`` and its two linear layers sharded with
``fully_shard`` in ``configure_model`` (lightning_fsdp_worker.py, one launch of about 15 s).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_cases import check_exact_dsignsgd, check_resume, launch

from compsde.lightning import sharded_root

# make_net's FSDP2 units as reduce-scattered on 2 ranks: each gradient padded along dim 0 to a
# multiple of N; net.0: 16×8 + 16; net.2: (1→2)×16 + (1→2)
UNITS = (16 * 8 + 16, 2 * 16 + 2)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return launch("lightning_fsdp_worker.py", tmp_path_factory.mktemp("lightning-fsdp"))


def test_the_sharded_trainer_step_is_dsignsgd(ranks):
    assert ranks[0]["exact"]["state"] == "FSDPState"
    check_exact_dsignsgd(ranks)


def test_the_bytes_are_the_sign_reduce_scatter_of_each_unit(ranks):
    world, steps = 2, 8
    # an all-to-all of N messages of ⌈d/8N⌉ bytes + 1 status byte per unit; no all-gather
    sent = steps * sum((world - 1) * (math.ceil(d / (8 * world)) + 1) for d in UNITS)
    for rank in ranks:
        counters = rank["exact"]["counters"]
        assert counters["bytes_sent"] == sent
        assert counters["bytes_fp32_reduce_scatter"] == steps * sum(4 * d / world
                                                                    for d in UNITS)
        assert counters["bytes_sent"] <= counters["bytes_fp32_reduce_scatter"] / 16
        assert rank["exact"]["metrics"]["compsde/ratio"] == (
            counters["bytes_sent"] / counters["bytes_fp32_reduce_scatter"])


def test_a_distributed_checkpoint_resume_is_bitwise_the_uninterrupted_run(ranks):
    check_resume(ranks)


def test_the_registered_root_must_hold_every_trainable_parameter(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        holder = nn.Module()
        holder.a, holder.b = nn.Linear(2, 2), nn.Linear(2, 2)
        holder.net = nn.Sequential(holder.a)
        fully_shard(holder.net)
        assert sharded_root(holder.net) is holder.net
        with pytest.raises(ValueError, match="net, leaves trainable parameters of Module outside"):
            sharded_root(holder)
        fully_shard(holder.b)
        with pytest.raises(ValueError, match="found 2 outermost fully_shard modules: b, net"):
            sharded_root(holder)
        plain = nn.Sequential(nn.Linear(2, 2))
        assert sharded_root(plain) is plain           # register then names it
        assert torch.is_tensor(next(plain.parameters()))
    finally:
        dist.destroy_process_group()
