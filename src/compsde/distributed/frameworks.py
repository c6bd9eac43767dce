"""What training frameworks hand out, unwrapped to the model :func:`.register` works on.

:func:`~compsde.distributed.register` puts a method (THEORY.md §2) on the data-parallel layer
itself: a ``DistributedDataParallel`` model or a module sharded with FSDP2's ``fully_shard``.
Frameworks wrap that layer once more; :func:`unwrap_model` follows these documented attributes
down to it:

- ``_forward_module``: Lightning Fabric's ``_FabricModule`` (what ``fabric.setup`` returns);
- ``_orig_mod``: ``torch.compile``'s ``OptimizedModule``;
- ``module``: any other wrapper (a user's own included) that holds the layer as ``.module``.

Accelerate's ``accelerator.prepare(model)`` returns the DDP model itself, and Lightning's
``trainer.strategy.model`` is the DDP model (``DDPStrategy``) or the FSDP2-sharded module
(``ModelParallelStrategy``). A plain module under a single process is the usual mistake of a
launch that started one process; the error says how to start more.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn

#: Attributes followed from a wrapper to the module it wraps, in this order.
WRAPPER_ATTRIBUTES = ("_forward_module", "_orig_mod", "module")
#: Wrappers that only add a framework's bookkeeping (followed silently).
_TRANSPARENT = ("_forward_module", "_orig_mod")
SUPPORTED = ("torch.nn.parallel.DistributedDataParallel or a module sharded with "
             "torch.distributed.fsdp.fully_shard (FSDP2), as such or as Lightning Fabric's "
             "fabric.setup, Lightning's DDPStrategy/ModelParallelStrategy or Accelerate's "
             "accelerator.prepare hand them out")
HOW_TO_START = ("start one process per rank: torchrun --nproc-per-node N script.py, "
                "accelerate launch --multi_gpu --num_processes N script.py (on CPU "
                "use torchrun: accelerate launch --cpu starts one process), or "
                "Fabric(devices=N, strategy='ddp') / Trainer(devices=N, strategy='ddp')")
_MAX_DEPTH = 8


def _is_data_parallel(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, (nn.parallel.DistributedDataParallel, FSDPModule))


def _inner(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The module ``module`` wraps and the attribute holding it (read without ``__getattr__``,
    which some wrappers forward to the module they wrap)."""
    children = vars(module).get("_modules") or {}
    for name in WRAPPER_ATTRIBUTES:
        inner = children.get(name, vars(module).get(name))
        if isinstance(inner, nn.Module) and inner is not module:
            return name, inner
    return None


def _world_size() -> int:
    if not dist.is_available() or not dist.is_initialized():
        return 0
    return dist.get_world_size()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The DDP or FSDP2 module that ``model`` is or wraps (module docstring).

    A DDP model or an FSDP2-sharded module is returned as is (also at world size 1). Raises
    ``ValueError`` for a plain module while ``torch.distributed`` is uninitialised or has one
    rank (only one process was started; the message says how to start more), for FSDP1 and
    ``DataParallel``, and for a wrapper holding neither DDP nor FSDP2 (e.g. DeepSpeed's
    engine), naming what was given and what is supported.
    """
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module: {SUPPORTED}; got "
                         f"{type(model).__name__}")
    chain = [type(model).__name__]
    current, opaque = model, False
    for _ in range(_MAX_DEPTH):
        if isinstance(current, FullyShardedDataParallel):
            raise ValueError(f"model ({_what(chain)}) is an FSDP1 FullyShardedDataParallel model, "
                             f"which has no custom reduce-scatter; shard it with "
                             f"torch.distributed.fsdp.fully_shard (FSDP2: Lightning's "
                             f"ModelParallelStrategy, Accelerate's fsdp_version=2) or wrap it "
                             f"in DistributedDataParallel")
        if _is_data_parallel(current):
            return current
        if isinstance(current, nn.DataParallel):
            raise ValueError(f"model ({_what(chain)}) is a DataParallel model (one process, "
                             f"several GPUs), which has no communication hooks; supported: "
                             f"{SUPPORTED}")
        found = _inner(current)
        if found is None:
            break
        attribute, current = found
        opaque = opaque or attribute not in _TRANSPARENT
        chain.append(type(current).__name__)
    world = _world_size()
    if opaque:
        raise ValueError(f"model ({_what(chain)}) holds neither a DistributedDataParallel "
                         f"model nor an FSDP2 (fully_shard) module, and compsde needs one of "
                         f"them; supported: {SUPPORTED}")
    if any(isinstance(m, FSDPModule) for m in current.modules()):
        raise ValueError(f"model ({_what(chain)}) has submodules sharded with fully_shard but "
                         f"its root is not; call fully_shard(model) on the root too")
    if world <= 1:
        why = ("torch.distributed is not initialised" if world == 0
               else "torch.distributed has world size 1")
        raise ValueError(f"model ({_what(chain)}) is a plain module, not DistributedDataParallel "
                         f"or FSDP2: only one process was started ({why}); "
                         f"{HOW_TO_START}")
    raise ValueError(f"model must be a torch.nn.parallel.DistributedDataParallel model or a "
                     f"module sharded with torch.distributed.fsdp.fully_shard, got "
                     f"{_what(chain)}, a plain module")


def _what(chain: list[str]) -> str:
    """``"_FabricModule holding Sequential"``: the classes seen from the outside in."""
    return " holding ".join(chain)
