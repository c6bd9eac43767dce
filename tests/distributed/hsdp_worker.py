"""One rank of the HSDP tests: a (2, 2) mesh on 4 gloo ranks, every method a few steps.

Run as ``python hsdp_worker.py OUT_DIR`` with RANK, WORLD_SIZE=4 and COMPSDE_INIT_METHOD set.
Writes ``OUT_DIR/rank{r}.pt``: per case the parameters after every step (full tensors), the
state's step, counters and units; a state_dict round trip against an uninterrupted run; the
messages of refused meshes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_spawn import join_group, refusals
from fsdp_layouts import LR, STEPS, LayoutModel, grads_for
from layout_worker import full
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from compsde.distributed import register

MESH = (2, 2)
CASES: dict[str, tuple[str, dict]] = {
    "dsgd": ("dsgd", {}),
    "dsignsgd": ("dsignsgd", {}),
    "dsignsgd-scatter": ("dsignsgd", {"sign_wire": "scatter"}),
    "randk": ("dcsgd:randk:ratio=0.05", {}),
    "bernoulli": ("dcsgd:bernoulli:p=0.1", {}),
    "qsgd": ("dcsgd:qsgd:levels=4", {}),
    "natural": ("dcsgd:natural", {}),
    "vote": ("dsignsgd:vote=majority", {}),
    "signum": ("signum:beta=0.9", {}),
}


def sharded(mesh, grouped: bool = False) -> LayoutModel:
    model = LayoutModel()
    if grouped:
        fully_shard([model.a, model.c], mesh=mesh)
    else:
        for leaf in (model.a, model.b, model.c):
            fully_shard(leaf, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def train(mesh, spec, options: dict, rank: int, steps: int = STEPS, start: int = 0,
          grouped: bool = False, saved: dict | None = None):
    model = sharded(mesh, grouped)
    state = register(model, spec, seed=7, **options)
    if saved is not None:
        state.load_state_dict(saved["state"])
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.distributed.tensor.distribute_tensor(
                    saved["params"][name], p.device_mesh, p.placements))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    params = []
    for step in range(start, start + steps):
        opt.zero_grad()
        model(grads_for(rank, step)).backward()
        opt.step()
        params.append({n: full(p) for n, p in model.named_parameters()})
    return model, state, params


def resumed(mesh, rank: int) -> dict:
    """Rand-k on the grouped layout: 4 steps straight, or 2, state_dict, 2 on a new model."""
    spec = "dcsgd:randk:ratio=0.25"
    straight = train(mesh, spec, {}, rank, steps=4, grouped=True)[2][-1]
    _, state, params = train(mesh, spec, {}, rank, steps=2, grouped=True)
    saved = {"state": state.state_dict(), "params": params[-1]}
    again = train(mesh, spec, {}, rank, steps=2, start=2, grouped=True, saved=saved)
    return {"straight": straight, "resumed": again[2][-1], "step": again[1].step}


def refused() -> dict[str, str]:
    attempts = {
        "names": lambda: register(sharded(init_device_mesh(
            "cpu", MESH, mesh_dim_names=("dp", "tp"))), "dsignsgd"),
        "one-replica": lambda: register(sharded(init_device_mesh(
            "cpu", (1, 4), mesh_dim_names=("replicate", "shard"))), "dsignsgd"),
    }
    solo = dist.new_group([dist.get_rank()], use_local_synchronization=True)
    mesh = init_device_mesh("cpu", MESH, mesh_dim_names=("replicate", "shard"))
    attempts["group"] = lambda: register(sharded(mesh), "dsignsgd", process_group=solo)
    return refusals(attempts)


def main() -> None:
    out = Path(sys.argv[1])
    rank, _ = join_group()
    mesh = init_device_mesh("cpu", MESH, mesh_dim_names=("replicate", "shard"))
    results = {}
    for name, (spec, options) in CASES.items():
        _, state, params = train(mesh, spec, options, rank)
        results[name] = {"params": params, "step": state.step, "counters": state.counters(),
                         "dimensions": state.bytes_per_dimension(),
                         "units": state.units, "world": state.world, "shards": state.shards}
    four = init_device_mesh("cpu", (4, 1), mesh_dim_names=("replicate", "shard"))
    _, state, params = train(four, "dsignsgd", {}, rank)      # R = 4: the digits wire
    results["dsignsgd-4x1"] = {"params": params, "step": state.step,
                               "counters": state.counters(),
                               "wires": sorted({type(c).__name__
                                                for c in state._codecs.values()})}
    results["resume"] = resumed(mesh, rank)
    results["refused"] = refused()
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
