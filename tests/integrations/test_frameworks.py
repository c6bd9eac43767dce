"""unwrap_model (and register through it) on what frameworks hand out, in one process.

The two-rank runs are in test_lightning.py, test_fabric.py and test_accelerate.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from torch.nn.parallel import DistributedDataParallel

from compsde.distributed import register
from compsde.distributed.frameworks import unwrap_model


@pytest.fixture
def one_rank(tmp_path):
    """A gloo group of world size 1 for the duration of the test."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))


class Holder(nn.Module):
    """A user's own wrapper exposing the data-parallel model as ``.module``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


class DeepSpeedEngine(nn.Module):
    """Shaped like DeepSpeed's engine: it reduces gradients itself and holds a plain module."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def test_ddp_and_its_wrappers_unwrap_to_the_ddp_model(one_rank):
    from lightning.fabric.wrappers import _FabricModule

    ddp = DistributedDataParallel(net())
    assert unwrap_model(ddp) is ddp
    assert unwrap_model(torch.compile(ddp)) is ddp
    assert unwrap_model(Holder(ddp)) is ddp
    assert unwrap_model(_FabricModule(ddp, strategy=None, original_module=ddp.module)) is ddp


def test_an_fsdp2_module_is_returned_as_is(one_rank):
    model = net()
    fully_shard(model)
    assert unwrap_model(model) is model


def test_register_through_a_fabric_wrapper_puts_the_method_on_the_ddp_model(one_rank):
    from lightning.fabric.wrappers import _FabricModule

    ddp = DistributedDataParallel(net())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # world size 1: no partner
        state = register(_FabricModule(ddp, strategy=None), "dsignsgd", seed=0)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    before = [p.detach().clone() for p in ddp.parameters()]
    ddp(torch.randn(5, 4)).square().sum().backward()
    optimizer.step()
    moved = torch.cat([(p.detach() - b).abs().reshape(-1)
                       for p, b in zip(ddp.parameters(), before, strict=True)])
    # one DSignSGD step with N = 1 moves every coordinate by lr · |sign| = 0.1 (rounding aside)
    assert torch.allclose(moved, torch.full_like(moved, 0.1), rtol=0, atol=1e-6)
    assert state.step == 1 and state.bytes_fp32_allreduce == 0.0     # N = 1 sends nothing


ONE_PROCESS = ("only one process was started", "torchrun --nproc-per-node",
               "accelerate launch --multi_gpu", "devices=")


def test_a_plain_module_without_a_group_says_how_to_start_more_processes():
    assert not dist.is_initialized()
    for call in (unwrap_model, lambda m: register(m, "dsignsgd")):
        with pytest.raises(ValueError) as info:
            call(net())
        message = str(info.value)
        assert all(part in message for part in ONE_PROCESS), message
        assert "Sequential" in message and "not initialised" in message


def test_a_plain_module_at_world_size_one_says_how_to_start_more_processes(one_rank):
    from lightning.fabric import Fabric

    fabric_model = Fabric(accelerator="cpu", devices=1).setup(net())   # one device: no DDP
    with pytest.raises(ValueError) as info:
        register(fabric_model, "dsignsgd")
    message = str(info.value)
    assert all(part in message for part in ONE_PROCESS), message
    assert "_FabricModule holding Sequential" in message and "world size 1" in message


def test_wrappers_holding_neither_ddp_nor_fsdp2_are_named(one_rank):
    with pytest.raises(ValueError) as info:
        unwrap_model(DeepSpeedEngine(net()))
    message = str(info.value)
    assert "DeepSpeedEngine holding Sequential" in message
    assert "DistributedDataParallel" in message and "fully_shard" in message
    with pytest.raises(ValueError, match="DataParallel model"):
        unwrap_model(nn.DataParallel(net()))
    fake = FullyShardedDataParallel.__new__(FullyShardedDataParallel)
    with pytest.raises(ValueError, match=r"FSDP1 FullyShardedDataParallel.*fully_shard"):
        unwrap_model(fake)
    partly = net()
    fully_shard(partly[0])
    with pytest.raises(ValueError, match="root is not; call fully_shard"):
        unwrap_model(partly)
    with pytest.raises(ValueError, match=r"must be a torch.nn.Module"):
        unwrap_model("model")
