"""One rank of the FSDP2 tests: every case trains a few steps of a fully_shard model.

Run as ``python fsdp_worker.py OUT_DIR`` with RANK, WORLD_SIZE and COMPSDE_INIT_METHOD set.
Writes ``OUT_DIR/rank{r}.pt``: per case, the full parameters after every step (gathered from
the shards), this rank's local shards, the counters, the pickled state, and the messages of
the unsupported settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_spawn import join_group, refusals
from fsdp_cases import CASES, LR, STEPS, BlockModel, rank_grads
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from compsde.distributed import register


def sharded(mp_policy: MixedPrecisionPolicy | None = None) -> BlockModel:
    model = BlockModel()
    kwargs = {} if mp_policy is None else {"mp_policy": mp_policy}
    for block in model.blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def run_case(spec: str, options: dict, rank: int, steps: int = STEPS, state=None):
    model = sharded()
    state = register(model, state if state is not None else spec, seed=7, **options)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    record = {"params": [], "local": []}
    for step in range(state.step, state.step + steps):
        opt.zero_grad()
        model(rank_grads(rank, step)).backward()
        opt.step()
        record["params"].append([p.full_tensor().detach().clone() for p in model.parameters()])
        record["local"].append([p.to_local().detach().clone() for p in model.parameters()])
    record["counters"] = state.counters()
    record["step"] = state.step
    record["pickled"] = state.__getstate__()
    record["model"] = model
    return record, state, model, opt


def resumed(rank: int) -> dict:
    """Two steps, a pickled state and parameters, a fresh model, then two more steps."""
    _, state, model, _ = run_case("dsignsgd", {}, rank, steps=2)
    saved = state.__getstate__()
    params = [p.full_tensor().detach().clone() for p in model.parameters()]
    fresh = sharded()
    with torch.no_grad():
        for p, value in zip(fresh.parameters(), params, strict=True):
            p.copy_(torch.distributed.tensor.distribute_tensor(value.detach(), p.device_mesh,
                                                               p.placements))
    loaded = type(state).__new__(type(state))
    loaded.__setstate__(saved)
    state = register(fresh, loaded)
    opt = torch.optim.SGD(fresh.parameters(), lr=LR)
    for step in range(2, 4):
        opt.zero_grad()
        fresh(rank_grads(rank, step)).backward()
        opt.step()
    return {"params": [p.full_tensor().detach().clone() for p in fresh.parameters()]}


def errors() -> dict[str, str]:
    attempts = {
        "plain": lambda: register(BlockModel(), "dsignsgd"),
        "reduce-dtype": lambda: register(
            sharded(MixedPrecisionPolicy(reduce_dtype=torch.bfloat16)), "dcsgd:qsgd:levels=4"),
        "sign-wire": lambda: register(sharded(), "dsignsgd", sign_wire="bits"),
    }
    return refusals(attempts)


def main() -> None:
    out = Path(sys.argv[1])
    rank, _ = join_group()
    results = {}
    for name, (spec, options) in CASES.items():
        record = run_case(spec, options, rank)[0]
        record.pop("model")
        results[name] = record
    results["resume"] = {"straight": run_case("dsignsgd", {}, rank, steps=4)[0]["params"][-1],
                         **resumed(rank)}
    results["errors"] = errors()
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
