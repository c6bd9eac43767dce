"""One rank of the FSDP2 layout tests: every layout × method trains a few steps.

Run as ``python layout_worker.py OUT_DIR`` with RANK, WORLD_SIZE and COMPSDE_INIT_METHOD set
(also at world size 1). Writes ``OUT_DIR/rank{r}.pt``: per (layout, method) the parameters
after every step by name (full tensors), ``state.step``, the units as parameter names, the
warnings; Rand-k's coverage over 8 steps of the grouped layout; the messages of refused
settings.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ddp_spawn import join_group, refusals
from fsdp_layouts import FROZEN, IGNORED, LR, METHODS, STEPS, UNITS, LayoutModel, grads_for
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from compsde.distributed import register
from compsde.distributed.fsdp_units import fsdp_units


def sharded(layout: str, mp_policy: MixedPrecisionPolicy | None = None) -> LayoutModel:
    model = LayoutModel()
    params = dict(model.named_parameters())
    for name in FROZEN.get(layout, []):
        params[name].requires_grad_(False)
    kw: dict = {}
    if layout == "no-reshard":
        kw["reshard_after_forward"] = False
    if layout == "mixed":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                               reduce_dtype=torch.float32)
    if mp_policy is not None:
        kw["mp_policy"] = mp_policy
    if layout in IGNORED:
        kw["ignored_params"] = {params[n] for n in IGNORED[layout]}
    if layout == "grouped":
        fully_shard([model.a, model.c], **kw)
    elif layout == "nested":
        fully_shard(model.b.inner, **kw)
        fully_shard(model.b, **kw)
    elif layout != "root":
        for leaf in (model.a, model.b, model.c):
            fully_shard(leaf, **kw)
    fully_shard(model, **kw)
    return model


def full(param: torch.Tensor) -> torch.Tensor:
    value = param.full_tensor() if hasattr(param, "full_tensor") else param
    return value.detach().float().clone()


def train(layout: str, spec: str, rank: int, steps: int = STEPS) -> dict:
    model = sharded(layout)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = register(model, spec, seed=7)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    record: dict = {"params": [], "warnings": [str(w.message) for w in caught]}
    for step in range(steps):
        opt.zero_grad()
        if layout == "accumulate":
            model.set_requires_gradient_sync(False)
            model(grads_for(rank, step, micro=1)).backward()
            model.set_requires_gradient_sync(True)
        model(grads_for(rank, step)).backward()
        opt.step()
        record["params"].append({n: full(p) for n, p in model.named_parameters()})
    names = {id(p): n for n, p in model.named_parameters()}
    record["units"] = [[names[id(fp.sharded_param)] for fp in unit.group.fsdp_params]
                       for unit in fsdp_units(model)]
    record["step"] = state.step
    record["state_units"] = state.units
    return record


def coverage(rank: int, steps: int = 8) -> float:
    """Fraction of entries Rand-k 0.25 ever changed in ``steps`` steps of the grouped layout."""
    model = sharded("grouped")
    register(model, "dcsgd:randk:ratio=0.25", seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(steps):
        opt.zero_grad()
        model(grads_for(rank, step)).backward()
        opt.step()
    changed = [(full(p) != 0) for p in model.parameters()]
    return float(sum(c.sum() for c in changed) / sum(c.numel() for c in changed))


def refused() -> dict[str, str]:
    twice = sharded("plain")
    register(twice, "dsignsgd")
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # the world-size-1 note
        register(ddp, "dsignsgd")
    attempts = {
        "twice": lambda: register(twice, "dsignsgd"),
        "ddp-twice": lambda: register(ddp, "dcsgd:randk:ratio=0.5"),
        "param-dtype": lambda: register(
            sharded("plain", MixedPrecisionPolicy(param_dtype=torch.bfloat16)),
            "dcsgd:qsgd:levels=4"),
    }
    if dist.get_world_size() > 1:
        solo = dist.new_group([dist.get_rank()], use_local_synchronization=True)
        attempts["group"] = lambda: register(sharded("plain"), "dsignsgd", process_group=solo)
    return refusals(attempts)


def step_errors(rank: int) -> dict[str, str]:
    """A backward pass that leaves a trainable unit out is a RuntimeError, not a reused key."""
    model = sharded("plain")
    register(model, "dcsgd:randk:ratio=0.25")
    grads = grads_for(rank, 0)
    found = {}
    try:
        model(grads, skip=("c",)).backward()          # c's unit takes no part
    except RuntimeError as exc:
        found["missing"] = str(exc)
    return found


def main() -> None:
    out = Path(sys.argv[1])
    rank, _ = join_group()
    results = {(layout, name): train(layout, spec, rank)
               for layout in UNITS for name, spec in METHODS.items()}
    results["coverage"] = coverage(rank)
    results["refused"] = refused()
    results["step-errors"] = step_errors(rank)
    torch.save(results, out / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
