"""``register(model, method)``: the one public entry that puts a method on a real model.

Its only job is to unwrap what a framework hands over (:func:`.frameworks.unwrap_model`) and
dispatch by parallelism, one module each: DDP to :mod:`.hooks`, FSDP2 on a 1-D mesh to
:mod:`.fsdp`, HSDP (FSDP2 on a 2-D ``(replicate, shard)`` mesh) to :mod:`.hsdp`.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import nn

from ..methods import Method
from ..noise import NoiseLaw
from .protocol import Protocol


def register(model: nn.Module, method: Method | str | Protocol, seed: int = 0,
             process_group: dist.ProcessGroup | None = None, *,
             noise: NoiseLaw | str | None = None, sign_wire: str = "auto",
             randomness: str = "shared", on_nonfinite: str = "raise") -> Any:
    """Make a plain ``torch.optim.SGD(lr=η)`` step on ``model`` perform ``method``
    (THEORY.md §2): after ``loss.backward()`` every gradient holds ``mean_i m_i``.

    Args:
        model: a ``DistributedDataParallel`` model (returns a :class:`~.hooks.HookState`), a
            model sharded with FSDP2's ``fully_shard`` (any layout: grouped, nested, root
            only; returns an :class:`~.fsdp.FSDPState`), an HSDP model sharded on
            ``init_device_mesh(device, (R, S), mesh_dim_names=("replicate", "shard"))``
            (returns an :class:`~.hsdp.HSDPState`: the reduce-scatter within a node stays the
            exact mean, the all-reduce across the R nodes is the method, so an agent of the
            theory is a node, ``N = R`` with batch ``S·B``), or what Lightning's Fabric or
            Accelerate hand out around one of these.
        method: ``"dsgd"``, ``"dsignsgd"``, ``"dcsgd:<compressor>"`` (randk, bernoulli, qsgd,
            natural, identity), a method beyond the paper (``"signum:beta=B"``,
            ``"scaledsign"``, ``"ef21:<compressor>"``, ``"ef-signsgd"``; THEORY.md §8, §8b),
            a :class:`~compsde.methods.Method`, or a saved state of the
            same kind to resume (then ``seed`` and the options are taken from it).
        seed: key of the shared randomness ``(seed, step, bucket)``; the same on all ranks.
        process_group: the model's own group is used; one given must hold the same ranks.
        noise, sign_wire, randomness, on_nonfinite: see :class:`.protocol.Protocol`. Note
            that Rand-k/Bernoulli with ``randomness="shared"`` (the default: one allreduce of
            the kept values) correlates the ranks' compressors; ``"independent"`` is the
            setting of THEORY.md §1.

    A step is one optimizer step's worth of reductions (gradient accumulation under DDP's
    ``no_sync()`` or FSDP's ``set_requires_gradient_sync(False)`` reduces once). At world
    size 1 the method is applied to the rank's own gradient (a warning notes there is no
    partner). Registering a model twice is a ``ValueError``. Every returned state has
    ``state_dict()`` / ``load_state_dict()`` for checkpoints.
    """
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    from .frameworks import unwrap_model

    model = unwrap_model(model)
    options = {"noise": noise, "sign_wire": sign_wire, "randomness": randomness,
               "on_nonfinite": on_nonfinite}
    if isinstance(model, nn.parallel.DistributedDataParallel):
        from .hooks import register_ddp

        return register_ddp(model, method, seed, process_group, **options)
    if isinstance(model, FullyShardedDataParallel):
        raise ValueError("model is an FSDP1 FullyShardedDataParallel model, which has no "
                         "custom reduce-scatter; shard it with "
                         "torch.distributed.fsdp.fully_shard (FSDP2) or wrap it in "
                         "DistributedDataParallel")
    if not isinstance(model, FSDPModule):
        raise ValueError(f"model must be a torch.nn.parallel.DistributedDataParallel "
                         f"model or a module sharded with torch.distributed.fsdp.fully_shard, "
                         f"got {type(model).__name__}")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("process_group: torch.distributed is not initialised; call "
                         "torch.distributed.init_process_group first")
    from .fsdp import register_fsdp

    return register_fsdp(model, method, seed, process_group, **options)
