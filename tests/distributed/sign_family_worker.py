"""One rank of the majority-vote and Signum tests: DDP cases (hook_worker.run_case) and FSDP2
cases on the plain layout (layout_worker.train), a few steps each.

Run as ``python sign_family_worker.py OUT_DIR`` with RANK, WORLD_SIZE and COMPSDE_INIT_METHOD
set (tests/distributed/ddp_spawn.py). Writes ``OUT_DIR/rank{r}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_spawn import join_group
from fsdp_layouts import grads_for
from hook_worker import run_case
from layout_worker import sharded, train

from compsde.distributed import register

# name -> (spec, register options)
DDP_CASES: dict[str, tuple[str, dict]] = {
    "vote-bits": ("dsignsgd:vote=majority", {"sign_wire": "bits"}),
    "vote-int8": ("dsignsgd:vote=majority", {"sign_wire": "int8"}),
    "vote-scatter": ("dsignsgd:vote=majority", {"sign_wire": "scatter"}),
    "signum": ("signum:beta=0.9", {}),
    "signum-vote-scatter": ("signum:beta=0.8,vote=majority", {"sign_wire": "scatter"}),
}
FSDP_CASES: dict[str, str] = {
    "vote": "dsignsgd:vote=majority",
    "signum-vote": "signum:beta=0.8,vote=majority",
}


def main() -> None:
    out = Path(sys.argv[1])
    rank, world = join_group()
    results: dict = {"ddp": {}, "fsdp": {}}
    for name, (spec, options) in DDP_CASES.items():
        results["ddp"][name] = run_case(spec, options, rank, world)
    for name, spec in FSDP_CASES.items():
        results["fsdp"][name] = train("plain", spec, rank)
    model = sharded("plain")
    state = register(model, "signum:beta=0.9", seed=7)
    model(grads_for(rank, 0)).backward()           # one step: the momentum of each unit
    results["fsdp-state-bytes"] = state.state_bytes
    results["fsdp-pickled"] = state.__getstate__()
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
