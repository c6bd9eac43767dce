"""One rank of the scaled-sign / error-feedback tests (tests/distributed/test_feedback_hooks.py):
DDP cases through hook_worker.run_case (several buckets, rebuilt after the first step), a
checkpoint round-trip, FSDP2 layouts (layout_worker.train), HSDP on a (N, 1) mesh and the
memory refusal.

Run as ``python feedback_worker.py OUT_DIR`` with RANK, WORLD_SIZE and COMPSDE_INIT_METHOD set
(tests/distributed/ddp_spawn.py). Writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_cases import LR, STEPS, LinearModel, rank_grads
from ddp_spawn import join_group, refusals
from fsdp_layouts import LayoutModel, grads_for
from hook_worker import run_case
from layout_worker import full, sharded, train
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from compsde.distributed import fsdp as fsdp_module
from compsde.distributed import prime_buckets, register


def ddp_cases(world: int) -> dict[str, tuple[str, dict]]:
    """name -> (spec, register options); the noise scales differ per rank (1, 2, …, N)."""
    scales = "/".join(str(i + 1) for i in range(world))
    return {
        "scaledsign": ("scaledsign", {}),
        "ef-signsgd": ("ef-signsgd", {}),
        "ef-signsgd-noise": ("ef-signsgd", {"noise": f"gaussian:scale={scales}"}),
        "ef21-topk": ("ef21:topk:ratio=0.05", {}),
        "ef21-scaledsign": ("ef21:scaledsign", {}),
        "ef21-randk": ("ef21:randk:ratio=0.05", {}),
        "ef21-randk-independent": ("ef21:randk:ratio=0.05", {"randomness": "independent"}),
        "ef21-bernoulli": ("ef21:bernoulli:p=0.1", {}),
        "ef21-qsgd": ("ef21:qsgd:levels=4", {}),
        "ef21-natural": ("ef21:natural", {}),
        "ef21-identity": ("ef21:identity", {}),
    }


RESUME_SPECS = ("ef-signsgd", "ef21:topk:ratio=0.05", "ef21:randk:ratio=0.05")
FSDP_LAYOUTS = ("plain", "grouped", "root", "nested")
FSDP_SPECS = ("scaledsign", "ef-signsgd", "ef21:topk:ratio=0.05", "ef21:scaledsign",
              "ef21:randk:ratio=0.05")
HSDP_SPECS = ("ef-signsgd", "ef21:topk:ratio=0.05")


def ddp_run(spec: str, rank: int, steps: range, params: list[torch.Tensor] | None = None,
            saved: bytes | None = None) -> tuple[list[torch.Tensor], bytes]:
    """Primed DDP steps ``steps`` from ``params`` (zeros) and a saved hook state (fresh)."""
    model = LinearModel()
    if params is not None:
        with torch.no_grad():
            for p, value in zip(model.parameters(), params, strict=True):
                p.copy_(value)
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.03)
    method = spec if saved is None else torch.load(io.BytesIO(saved), weights_only=False)
    state = register(ddp, method, seed=7)
    prime_buckets(ddp, state, rank_grads(rank, 0))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for step in steps:
        opt.zero_grad()
        ddp(rank_grads(rank, step)).backward()
        opt.step()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return [p.detach().clone() for p in model.parameters()], buffer.getvalue()


def resumed(spec: str, rank: int) -> dict:
    """Four primed steps straight, and two steps, a checkpoint, two more steps."""
    straight, _ = ddp_run(spec, rank, range(4))
    params, saved = ddp_run(spec, rank, range(2))
    again, _ = ddp_run(spec, rank, range(2, 4), params, saved)
    return {"straight": straight, "resumed": again}


def hsdp(spec: str, rank: int, world: int) -> list[dict]:
    """HSDP on a (world, 1) mesh: every rank a node of one rank, the method across them."""
    mesh = init_device_mesh("cpu", (world, 1), mesh_dim_names=("replicate", "shard"))
    model = LayoutModel()
    for leaf in (model.a, model.b, model.c):
        fully_shard(leaf, mesh=mesh)
    fully_shard(model, mesh=mesh)
    register(model, spec, seed=7)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    history = []
    for step in range(STEPS):
        opt.zero_grad()
        model(grads_for(rank, step)).backward()
        opt.step()
        history.append({n: full(p) for n, p in model.named_parameters()})
    return history


def memory(rank: int) -> dict:
    """The state bytes FSDP2 plans for EF21, and the refusal when the device lacks them."""
    model = sharded("plain")
    units = fsdp_module.model_units(model)
    plan = fsdp_module.state_buffer_bytes(units, fsdp_module.FSDPState("ef21:topk:ratio=0.05"))
    real = fsdp_module.available_memory
    fsdp_module.available_memory = lambda device: 1000
    try:
        found = refusals({
            "memory": lambda: register(sharded("plain"), "ef21:topk:ratio=0.05"),
            "skip": lambda: register(sharded("plain"), "ef-signsgd", on_nonfinite="skip"),
        })
        fsdp_module.available_memory = lambda device: plan     # just enough
        state = register(sharded("plain"), "ef21:topk:ratio=0.05")
    finally:
        fsdp_module.available_memory = real
    return {"plan": plan, "refused": found, "registered": state.method_spec}


def main() -> None:
    out = Path(sys.argv[1])
    rank, world = join_group()
    results: dict = {"ddp": {}, "resume": {}, "fsdp": {}, "hsdp": {}}
    for name, (spec, options) in ddp_cases(world).items():
        results["ddp"][name] = run_case(spec, options, rank, world)
    for spec in RESUME_SPECS:
        results["resume"][spec] = resumed(spec, rank)
    for layout in FSDP_LAYOUTS:
        for spec in FSDP_SPECS:
            results["fsdp"][(layout, spec)] = train(layout, spec, rank)
    model = sharded("plain")
    state = register(model, "ef21:topk:ratio=0.05", seed=7)
    model(grads_for(rank, 0)).backward()
    results["fsdp-state-bytes"] = state.state_bytes
    results["fsdp-buffers"] = {name: len(held) for name, held in state.buffers.items()}
    if world > 1:
        for spec in HSDP_SPECS:
            results["hsdp"][spec] = hsdp(spec, rank, world)
    else:            # one rank is one replica: HSDP has no nodes to run the method across
        results["hsdp-refused"] = refusals({spec: (lambda s=spec: hsdp(s, rank, world))
                                            for spec in HSDP_SPECS})
    results["memory"] = memory(rank)
    results["ddp-refused"] = refusals({
        "skip": lambda: register(nn.parallel.DistributedDataParallel(LinearModel()),
                                 "ef21:topk:ratio=0.1", on_nonfinite="skip"),
    })
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
