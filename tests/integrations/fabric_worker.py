"""One rank of the Lightning Fabric tests: ``python fabric_worker.py OUT_DIR``.

``register`` on the model ``fabric.setup`` returns: ``exact`` (DSignSGD, 8 steps recorded);
Rand-k ``straight`` (8 steps) and ``resumed`` (4 steps, ``fabric.save`` with the state, a
fresh model, optimizer and state from ``fabric.load``, 4 more); ``sharded`` (DSignSGD on the
FSDP2 model of Fabric's ModelParallelStrategy, 8 steps recorded). Writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from integration_cases import BATCH, LR, dataset, finish, flat, join_group, loss_fn, make_net
from lightning.fabric import Fabric
from lightning.fabric.strategies import ModelParallelStrategy
from torch.distributed.fsdp import fully_shard

import compsde

RANDK = "dcsgd:randk:ratio=0.25"


def batches(fabric: Fabric) -> list:
    loader = fabric.setup_dataloaders(
        torch.utils.data.DataLoader(dataset(), batch_size=BATCH, shuffle=False))
    return [batch for _ in range(2) for batch in loader]       # 2 epochs of 4 batches


def setup(fabric: Fabric, method, steps: list):
    net = make_net()
    model, optimizer = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=LR))
    state = compsde.distributed.register(model, method, seed=3)
    compsde.distributed.prime_buckets(model, state, steps[0][0])
    return net, model, optimizer, state


def train(fabric: Fabric, net, model, optimizer, batches: list) -> tuple[list, list]:
    record, losses = [], []
    for x, y in batches:
        before = flat(net)
        loss = loss_fn(model, x, y)
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        record.append((before, x.clone(), y.clone(), flat(net)))
        losses.append(loss.item())
    return record, losses


def shard(net: torch.nn.Module, mesh) -> torch.nn.Module:
    """Fabric's parallelize_fn: both linear layers, then the whole net, with FSDP2."""
    for layer in (net[0], net[2]):
        fully_shard(layer, mesh=mesh["data_parallel"])
    return fully_shard(net, mesh=mesh["data_parallel"])


def sharded_run() -> dict:
    """DSignSGD on the FSDP2 model Fabric's ModelParallelStrategy hands out."""
    fabric = Fabric(accelerator="cpu", devices=2, strategy=ModelParallelStrategy(
        shard, data_parallel_size=2, tensor_parallel_size=1))
    fabric.launch()
    net = make_net()
    model = fabric.setup(net)
    optimizer = fabric.setup_optimizers(torch.optim.SGD(model.parameters(), lr=LR))
    state = compsde.distributed.register(model, "dsignsgd", seed=0)
    steps, losses = train(fabric, net, model, optimizer, batches(fabric))
    return {"steps": steps, "losses": losses, "counters": state.counters(),
            "params": flat(net), "state": type(state).__name__}


def main() -> None:
    out = Path(sys.argv[1])
    rank, _ = join_group()
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
    fabric.launch()
    data = batches(fabric)
    net, model, optimizer, state = setup(fabric, "dsignsgd", data)
    steps, losses = train(fabric, net, model, optimizer, data)
    record = {"exact": {"steps": steps, "losses": losses, "counters": state.counters(),
                        "params": flat(net), "wrapper": type(model).__name__}}
    net, model, optimizer, state = setup(fabric, RANDK, data)
    train(fabric, net, model, optimizer, data)
    record["straight"] = {"params": flat(net), "counters": state.counters(), "step": state.step}
    net, model, optimizer, state = setup(fabric, RANDK, data)
    train(fabric, net, model, optimizer, data[:4])
    path = out / "half.ckpt"
    fabric.save(path, {"model": model, "optimizer": optimizer, "compsde": state})
    net, model, optimizer, state = setup(fabric, RANDK, data)
    fabric.load(path, {"model": model, "optimizer": optimizer, "compsde": state})
    train(fabric, net, model, optimizer, data[4:])
    record["resumed"] = {"params": flat(net), "counters": state.counters(), "step": state.step}
    record["sharded"] = sharded_run()
    torch.save(record, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
    finish()
