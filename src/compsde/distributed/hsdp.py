"""The methods on HSDP's inter-node all-reduce (THEORY.md §2, "HSDP: an agent is a node").

HSDP shards a model within a *node* of ``S`` ranks over fast links and replicates it across
``R`` nodes: ``fully_shard(module, mesh=init_device_mesh(device, (R, S),
mesh_dim_names=("replicate", "shard")))``. Each backward FSDP reduce-scatters every unit's
gradient within the node (exact, fp32), and then all-reduces the shards across the ``R``
replicas of each shard over the slow links. ``register(model, method)`` keeps the first and
replaces the second by the method, applied to each shard:

- DSGD: the mean over the replica groups (HSDP as it is, counted);
- DCSGD: each replica group compresses its shard of the node-mean gradient (shared-seed
  Rand-k/Bernoulli: the same coordinates on the ``R`` replicas of a shard; QSGD, natural) and
  the groups average;
- DSignSGD: the mean over replica groups of the signs of each node-mean shard, on the wire with
  the fewest bytes at ``R`` (the bit all-gather at R = 2 and 3, else the sign reduce-scatter,
  its counts as base-(R+1) digits where that is shorter than bit planes: R = 4 moves 0.052 of
  fp32's bytes instead of 1/16).

- scaled sign, EF-signSGD, EF21 (THEORY.md §8b): the codec of their compressor on each
  node-mean shard, the state buffers (EF-signSGD's error, EF21's ``h`` and ``ĥ``) one per
  shard and replica, the scaled sign's ``‖p‖₁/d`` taken over the shard.

So in the theory and the advisor an agent is a node: ``N = R`` agents, each with the batch
``S·B`` of its ranks. The message of unit ``u`` on shard ``s`` is keyed ``(seed, step,
u·S + s, r)``: the replicas of one shard share Rand-k's coordinates; shards draw independently.

How: FSDP's reduce-scatter sums within the node (``set_force_sum_reduction_for_comms``, divide
factor 1); its all-reduce hook (``set_all_reduce_hook``) divides by ``S`` and runs the method
over the replicate group (:func:`.collective.reduce_over`). FSDP's own full-precision
all-reduce is pointed at a one-rank group, so it moves nothing: its process group is the
``replicate_process_group`` of the unit's mesh info, which has no public setter in torch 2.13;
:func:`register_hsdp` replaces it on a copy of that mesh info held by the unit alone.
Counters: ``bytes_sent`` etc. are the replica dimension (the slow links); ``bytes_shard_sent``
the reduce-scatter within the node; ``bytes_fp32_allreduce`` HSDP's fp32 all-reduce of the same
shards, for comparison.
"""

from __future__ import annotations

import copy
from typing import Any

import torch.distributed as dist
from torch import Tensor, nn

from ..methods import Method
from .codecs import BucketKey
from .collective import reduce_over
from .fsdp import (
    FSDPState,
    _check_dtype,
    check_state_memory,
    check_units,
    reduce_scatter_bytes,
)
from .fsdp_units import Unit
from .wire import AUTO_SIGN_WIRES

MESH_NAMES = ("replicate", "shard")


class HSDPState(FSDPState):
    """Method state of one rank of an HSDP model: the method runs over the ``R`` replicas
    (``world`` = R, ``rank`` = this rank's replica index); ``shards`` = S ranks per node,
    ``shard_rank`` this rank's index within its node (module docstring)."""

    _PICKLED = (*FSDPState._PICKLED, "shards", "shard_rank", "bytes_shard_sent")
    # the all-reduce across nodes is where the digits of the counts pay (R = 4: 0.052 of fp32)
    auto_sign_wires = (*AUTO_SIGN_WIRES, "digits")

    def __init__(self, method: Method | str, seed: int, replicate_group: dist.ProcessGroup,
                 shards: int, shard_rank: int, **options: Any):
        super().__init__(method, seed, replicate_group, **options)
        self.shards, self.shard_rank = shards, shard_rank
        self.bytes_shard_sent = 0.0

    def message_key(self, unit: int) -> BucketKey:
        """The key of this rank's message for ``unit``: its shard's, shared by its replicas."""
        key = self.key_for(unit)
        return BucketKey(key.seed, key.step, unit * self.shards + self.shard_rank, key.rank)

    def counters(self) -> dict[str, float]:
        return {**super().counters(), "bytes_shard_sent": self.bytes_shard_sent}

    def bytes_per_dimension(self) -> dict[str, float]:
        """Bytes this rank has sent on each mesh dimension: ``replicate`` (across nodes, the
        method's wire) and ``shard`` (FSDP's exact reduce-scatter within the node)."""
        return {"replicate": self.bytes_sent, "shard": self.bytes_shard_sent}

    def account_node(self, shard: int, element_size: int) -> None:
        """The reduce-scatter within the node that produced a shard of ``shard`` entries."""
        moved = reduce_scatter_bytes(shard * self.shards * element_size, self.shards)
        self.bytes_shard_sent += moved
        self.bytes_fp32_reduce_scatter += reduce_scatter_bytes(4 * shard * self.shards,
                                                               self.shards)


class ReplicaReduce:
    """The all-reduce hook of unit ``unit``: node mean, then the method across replicas."""

    compsde_comm = True       # see fsdp.is_registered

    def __init__(self, state: HSDPState, unit: int):
        self.state, self.unit = state, unit

    def __call__(self, shard: Tensor) -> None:
        state = self.state
        _check_dtype(state, shard.dtype)
        key = state.message_key(self.unit)
        state.account_node(shard.numel(), shard.element_size())
        if state.shards > 1:
            shard.div_(state.shards)          # FSDP summed the node's S gradients
        reduce_over(state, state.codec(self.unit, shard), shard, key, state.process_group,
                    shard)
        state.reduced(self.unit)


def _solo_group() -> dist.ProcessGroup:
    """A process group of this rank alone (made without the other ranks taking part)."""
    return dist.new_group([dist.get_rank()], use_local_synchronization=True)


def hsdp_mesh(units: list[Unit]) -> Any:
    """The (R, S) mesh every unit is sharded on; ``ValueError`` naming the expected shape."""
    from torch.distributed.fsdp._fully_shard._fsdp_common import HSDPMeshInfo

    info = units[0].group.mesh_info
    if not isinstance(info, HSDPMeshInfo):
        raise ValueError("model is replicated without sharding (a replicate-only mesh); wrap "
                         "it in DistributedDataParallel, or shard it on a mesh of shape (R, S)")
    mesh = info.mesh
    expected = ("mesh must be a DeviceMesh of shape (R, S) with mesh_dim_names=('replicate', "
                "'shard')")
    if mesh.ndim != 2 or tuple(mesh.mesh_dim_names or ()) != MESH_NAMES:
        raise ValueError(f"{expected}; the model's has shape {tuple(mesh.shape)} and names "
                         f"{mesh.mesh_dim_names}")
    for unit in units[1:]:
        if unit.group.mesh_info.mesh != mesh:
            raise ValueError(f"{expected}, the same for every unit; unit {unit.name} is on "
                             f"another mesh")
    if mesh.size(0) < 2:
        raise ValueError(f"{expected} and R ≥ 2 replicas for the method to run across; the "
                         f"model's has R = 1 (shard on a 1-D mesh instead)")
    return mesh


def register_hsdp(model: nn.Module, units: list[Unit], method: Method | str | HSDPState,
                  seed: int = 0, process_group: dist.ProcessGroup | None = None,
                  **options: Any) -> HSDPState:
    """Install the method on the inter-node all-reduce of every unit (module docstring)."""
    mesh = hsdp_mesh(units)
    replicate, shard = mesh.get_group("replicate"), mesh.get_group("shard")
    if process_group is not None:
        given = dist.get_process_group_ranks(process_group)
        if given not in (sorted(mesh.mesh.flatten().tolist()),
                         dist.get_process_group_ranks(replicate)):
            raise ValueError(f"process_group holds ranks {given}, which is neither the model's "
                             f"mesh nor its replicate group; omit process_group")
    replicas, shards = mesh.size(0), mesh.size(1)
    if isinstance(method, HSDPState):
        state = method
        if (state.world, state.shards) != (replicas, shards):
            raise ValueError(f"the model's mesh is (R, S) = ({replicas}, {shards}) but the "
                             f"saved state was made for ({state.world}, {state.shards}); "
                             f"resume on the same mesh")
        state.process_group = replicate
        state.rank, state.shard_rank = dist.get_rank(replicate), dist.get_rank(shard)
    elif isinstance(method, FSDPState):
        raise ValueError("method is the state of a 1-D FSDP2 run; an HSDP model resumes from "
                         "an HSDP state")
    else:
        state = HSDPState(method, seed, replicate, shards, dist.get_rank(shard), **options)
    check_units(model, units, state)
    check_state_memory(units, state, shards)
    state.tracker.bind(units)
    solo = _solo_group()
    for unit in units:
        unit.module.set_force_sum_reduction_for_comms(True)
        unit.module.set_gradient_divide_factor(1.0)
        info = copy.copy(unit.group.mesh_info)
        info.replicate_process_group = solo
        unit.group.mesh_info = info
        unit.module.set_all_reduce_hook(ReplicaReduce(state, unit.index))
    return state
