"""One rank of the hook tests: every case trains a few steps under DDP + our hook.

Run as ``python hook_worker.py OUT_DIR [CASE,CASE,…]`` with RANK, WORLD_SIZE and
COMPSDE_INIT_METHOD set (tests/distributed/ddp_spawn.py). Writes ``OUT_DIR/rank{r}.pt`` with,
per case, the parameters after every step, the bucket layout of every step, the byte counters
and any error message. The gradients are known functions of ``(rank, step)`` so the test can
replay them in-process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_cases import (
    ACCUMULATE_CASES,
    ERROR_CASES,
    MICRO_OFFSET,
    MLP_CAP_MB,
    STEPS,
    LinearModel,
    cases,
    mlp_batch,
    mlp_model,
    rank_grads,
)
from ddp_spawn import join_group

from compsde.distributed import register


def run_case(spec: str, options: dict, rank: int, world: int, nan_step: int | None = None,
             accumulate: bool = False):
    model = LinearModel()
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.03)
    state = register(ddp, spec, seed=7, **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    record = {"params": [], "layouts": [], "skipped": []}
    for step in range(STEPS):
        grads = rank_grads(rank, step)
        if nan_step == step and rank == world - 1:
            grads[0][5] = float("nan")
        opt.zero_grad()
        if accumulate:
            with ddp.no_sync():
                ddp(rank_grads(rank, step + MICRO_OFFSET)).backward()
        try:
            ddp(grads).backward()
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            break
        record["skipped"].append(state.skipped)
        if not state.skipped:
            opt.step()
        record["params"].append([p.detach().clone() for p in model.parameters()])
        record["layouts"].append(dict(state.layout))
    record["counters"] = state.counters()
    record["step"] = state.step
    record["skipped_steps"] = list(state.skipped_steps)
    record["pickled"] = state.__getstate__()
    return record


def run_mlp(rank: int) -> dict:
    model = mlp_model()
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=MLP_CAP_MB)
    state = register(ddp, "dsignsgd", seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    record = {"params": [], "layouts": []}
    for step in range(STEPS):
        x, y = mlp_batch(rank, step)
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        record["params"].append([p.detach().clone() for p in model.parameters()])
        record["layouts"].append(dict(state.layout))
    return record


def main() -> None:
    out = Path(sys.argv[1])
    rank, world = join_group()
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    results = {}
    for name, (spec, options) in cases(world).items():
        if only is None or name in only:
            started = time.perf_counter()
            results[name] = run_case(spec, options, rank, world)
            results[name]["seconds"] = time.perf_counter() - started
    if only is None or "mlp" in only:
        results["mlp"] = run_mlp(rank)
    for name, (spec, options) in ACCUMULATE_CASES.items():
        if only is None or name in only:
            results[name] = run_case(spec, options, rank, world, accumulate=True)
    for name, (spec, options, nan_step) in ERROR_CASES.items():
        if only is None or name in only:
            results[name] = run_case(spec, options, rank, world, nan_step)
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
