"""The paper's methods as FSDP2's gradient reduce-scatter (``fully_shard``, THEORY.md §2).

``register(model, "dsignsgd", seed=0)`` on a module sharded with
``torch.distributed.fsdp.fully_shard`` installs one :class:`MethodReduceScatter` as the custom
reduce-scatter of every ``FSDPModule`` in it (each module's parameter group is one message,
keyed by its position in ``model.modules()``), with FSDP's own averaging switched off
(``set_force_sum_reduction_for_comms(True)``, ``set_gradient_divide_factor(1)``). After
``backward()`` each rank's sharded ``.grad`` holds its shard of ``mean_i m_i``, so a plain
``torch.optim.SGD`` step on the sharded parameters performs the method:

- DSGD: ``g_i / N`` reduce-scattered with a sum (FSDP's default traffic);
- DCSGD: the codecs of :mod:`.codecs` on the rank's whole padded flat gradient of the group
  (shared-seed Rand-k/Bernoulli: an allreduce of the kept values only; QSGD/natural: an
  all-gather of the encodings), of which the rank keeps its shard;
- DSignSGD: the first half of the sign reduce-scatter (:class:`.codecs.SignScatterCodec`):
  an all-to-all of packed signs, then the rank counts its shard — no all-gather.

FSDP calls the reduce-scatter synchronously and in the same order on every rank; each call
issues its collectives and waits for them in order, so nothing waits in a callback. Not
supported (a ``ValueError`` each): a plain module, FSDP1, HSDP (a replicate mesh dimension),
reduce dtypes other than float32/float64 for the quantisers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard._fsdp_api import ReduceScatter

from ..methods import Method
from .codecs import ALLREDUCE, SCATTER, BucketKey, Codec, all_finite
from .protocol import Protocol
from .sign_codecs import SignScatterCodec
from .wire import allreduce_bytes

_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_QUANTISER_FLOATS = (torch.float32, torch.float64)


def reduce_scatter_bytes(nbytes: int, world: int) -> float:
    """Bytes one rank sends (and receives) in a ring reduce-scatter of ``nbytes``."""
    return (world - 1) * nbytes / world if world > 1 else 0.0


def fsdp_flat(grads: Sequence[Tensor], world: int) -> Tensor:
    """FSDP2's reduce-scatter input for full gradients ``grads`` of one parameter group: each
    gradient zero-padded along dim 0 to a multiple of ``world`` rows, cut into ``world``
    chunks, and row ``r`` = the concatenated ``r``-th chunks (what rank ``r`` receives)."""
    rows = []
    for grad in grads:
        size0 = grad.shape[0] if grad.dim() else 1
        flat = grad.reshape(size0, -1)
        padded = -(-size0 // world) * world
        if padded != size0:
            flat = torch.cat([flat, flat.new_zeros(padded - size0, flat.shape[1])])
        rows.append(flat.reshape(world, -1))
    return torch.cat(rows, dim=1).reshape(-1)


class FSDPState(Protocol):
    """Method state of one rank for an FSDP2 model (see :class:`.protocol.Protocol`); pickles
    like the DDP hook's :class:`~compsde.distributed.HookState` for checkpoints.

    :attr:`step` advances once every parameter group has been reduced; counters compare with
    :attr:`bytes_fp32_reduce_scatter`, FSDP's default fp32 reduce-scatter of the same groups.
    """

    _PICKLED = (*Protocol._PICKLED, "bytes_fp32_reduce_scatter")

    def __init__(self, method: Method | str, seed: int = 0,
                 process_group: dist.ProcessGroup | None = None, **options: Any):
        world = dist.get_world_size(process_group)
        super().__init__(method, seed, world, dist.get_rank(process_group), **options)
        self.process_group = process_group
        self.groups = 0
        self._reduced: set[int] = set()
        self.bytes_fp32_reduce_scatter = 0.0

    def counters(self) -> dict[str, float]:
        return {**super().counters(), "bytes_fp32_reduce_scatter": self.bytes_fp32_reduce_scatter}

    def key_for(self, group: int) -> BucketKey:
        if not self._reduced:
            self.begin_step()
        return BucketKey(self.seed, self.step, group, self.rank)

    def reduced(self, group: int) -> None:
        self._reduced.add(group)
        if len(self._reduced) >= self.groups:
            self._reduced.clear()
            self.step += 1

    def account_shard(self, payload: int, moved: float, d: int, element_size: int) -> None:
        self.payload_bytes += payload
        self.bytes_sent += moved
        self.bytes_received += moved
        self.bytes_fp32_allreduce += allreduce_bytes(4 * d, self.world)
        self.bytes_fp32_reduce_scatter += reduce_scatter_bytes(4 * d, self.world)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.process_group = None
        self.groups = 0
        self._reduced = set()


class MethodReduceScatter(ReduceScatter):
    """FSDP2's ``ReduceScatter`` for parameter group ``group``: ``output`` ← this rank's shard
    of ``mean_i m_i`` of the ranks' flat ``input`` (module docstring)."""

    def __init__(self, state: FSDPState, group: int):
        self.state, self.group = state, group

    def allocate(self, size: Sequence[int], *, dtype: torch.dtype,
                 device: torch.device) -> Tensor:
        return torch.empty(*size, dtype=dtype, device=device)

    def __call__(self, output_tensor: Tensor, input_tensor: Tensor, group: dist.ProcessGroup,
                 op: Any, async_op: bool = False) -> None:
        state = self.state
        if op != dist.ReduceOp.SUM:
            raise ValueError(f"the reduce-scatter of {state.method_spec} needs FSDP's sum "
                             f"reduction (register() sets it); got op {op}")
        _check_dtype(state, input_tensor.dtype)
        key = state.key_for(self.group)
        codec = state.codec(self.group, input_tensor)
        if state.method.name == "dsignsgd":
            self._sign_shard(codec, input_tensor, output_tensor, key, group)
        elif codec.collective == ALLREDUCE and not codec.checks_locally:      # DSGD
            self._mean(codec, input_tensor, output_tensor, key, group)
        else:
            self._full_then_shard(codec, input_tensor, output_tensor, key, group)
        state.reduced(self.group)
        return None

    def _mean(self, codec: Codec, grad: Tensor, out: Tensor, key: BucketKey,
              group: dist.ProcessGroup) -> None:
        """DSGD: sum-reduce-scatter of ``g_i / N``, then a one-number allreduce of the shards'
        non-finite flags so every rank raises (or skips) together."""
        state = self.state
        payload = state.prepare(grad, key, codec)
        _reduce_scatter(out, payload, group=group)
        flag = torch.tensor([0.0 if all_finite(out) else 1.0], device=out.device)
        dist.all_reduce(flag, group=group)
        size = payload.element_size()
        state.account_shard(payload.numel() * size + 4,
                            reduce_scatter_bytes(payload.numel() * size, state.world)
                            + allreduce_bytes(4, state.world), grad.numel(), size)
        if flag.item():
            out.fill_(float("nan"))        # the mean codec reports it on every rank alike
        state.finish(codec, out, key, out)

    def _sign_shard(self, codec: Codec, grad: Tensor, out: Tensor, key: BucketKey,
                    group: dist.ProcessGroup) -> None:
        state = self.state
        shard = grad.numel() // state.world
        if not (isinstance(codec, SignScatterCodec) and codec.rows_of_input
                and codec.shard == shard and codec.dtype == grad.dtype):
            codec = state._codecs[self.group] = SignScatterCodec(
                grad.numel(), state.world, grad.dtype, grad.device, shard=shard)
        send = state.prepare(grad, key, codec)
        dist.all_to_all_single(codec.received.view(-1), send.view(-1), group=group)
        state.account_shard(*codec.traffic(send), grad.numel(), grad.element_size())
        state.finish(_ShardView(codec), codec.received, key, out)

    def _full_then_shard(self, codec: Codec, grad: Tensor, out: Tensor, key: BucketKey,
                         group: dist.ProcessGroup) -> None:
        state = self.state
        payload = state.prepare(grad, key, codec)
        nbytes, moved = codec.traffic(payload)
        if codec.collective == ALLREDUCE:
            dist.all_reduce(payload, group=group)
            combined = payload
        else:
            combined = codec.gathered
            _all_gather(combined.view(-1), payload, group=group)
        state.account_shard(nbytes, moved, grad.numel(), grad.element_size())
        full = torch.empty_like(grad)
        state.finish(codec, combined, key, full)
        out.copy_(full.view(state.world, -1)[state.rank])


class _ShardView(Codec):
    """A :class:`SignScatterCodec` decoding only this rank's shard from the received rows."""

    collective = SCATTER

    def __init__(self, codec: SignScatterCodec):
        self.codec, self.d, self.world = codec, codec.shard, codec.world
        self.dtype, self.device, self.gathered = codec.dtype, codec.device, None

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        return self.codec.shard_mean(combined, out)


def _check_dtype(state: Protocol, dtype: torch.dtype) -> None:
    quantiser = state.method.name == "dcsgd" and state.compressor.name in ("qsgd", "natural")
    allowed = _QUANTISER_FLOATS if quantiser else _FLOATS
    if dtype not in allowed:
        raise ValueError(f"reduce_dtype {dtype} is not supported by {state.method_spec}; use "
                         f"MixedPrecisionPolicy(reduce_dtype=...) with one of "
                         f"{', '.join(str(t) for t in allowed)}")


def fsdp_modules(model: nn.Module) -> list[FSDPModule]:
    """The ``FSDPModule`` s of ``model`` that own parameters, in ``model.modules()`` order."""
    found = []
    for module in model.modules():
        if isinstance(module, FSDPModule) and module._get_fsdp_state()._fsdp_param_groups:
            found.append(module)
    return found


def check_fsdp_model(model: FSDPModule, state: Protocol) -> list[FSDPModule]:
    """The sharded modules of ``model``; ``ValueError`` for what the methods cannot serve."""
    from torch.distributed.fsdp._fully_shard._fsdp_common import DDPMeshInfo

    modules = fsdp_modules(model)
    if not modules:
        raise ValueError("model: no fully_shard module with parameters was found")
    for module in modules:
        for group in module._get_fsdp_state()._fsdp_param_groups:
            if isinstance(group.mesh_info, DDPMeshInfo):
                raise ValueError("model uses HSDP or replication (a 2-D device mesh); the "
                                 "methods need fully_shard on a 1-D mesh")
            reduce_dtype = group.mp_policy.reduce_dtype
            if reduce_dtype is not None:
                _check_dtype(state, reduce_dtype)
    return modules


def register_fsdp(model: FSDPModule, method: Method | str | FSDPState, seed: int = 0,
                  process_group: dist.ProcessGroup | None = None, **options: Any) -> FSDPState:
    """Install the method on every sharded module of ``model`` (module docstring)."""
    sign_wire = options.pop("sign_wire", "auto")
    if sign_wire not in ("auto", "scatter"):
        raise ValueError(f"sign_wire must be 'auto' or 'scatter' under FSDP2 (its reduce-"
                         f"scatter keeps a shard; no all-gather), got {sign_wire!r}")
    if isinstance(method, FSDPState):
        state = method
        state.process_group = process_group
        if dist.get_world_size(process_group) != state.world:
            raise ValueError(f"process_group has {dist.get_world_size(process_group)} ranks "
                             f"but the saved state was made for {state.world}; resume with "
                             f"the same world size")
        state.rank = dist.get_rank(process_group)
    else:
        state = FSDPState(method, seed, process_group, sign_wire="scatter", **options)
    modules = check_fsdp_model(model, state)
    state.groups = len(modules)
    for index, module in enumerate(modules):
        module.set_custom_reduce_scatter(MethodReduceScatter(state, index))
        module.set_force_sum_reduction_for_comms(True)
        module.set_gradient_divide_factor(1.0)
    return state


def shard_blocks(model: nn.Module) -> nn.Module:
    """``fully_shard`` every top-level block of ``model`` that has parameters, then the root
    (the trainer's ``--parallel fsdp``); returns ``model``."""
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(p.requires_grad for p in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded, CPU) state dicts of a sharded model and its optimizer, for a
    checkpoint; a collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer, options=options))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optimizer_state: dict) -> None:
    """Load :func:`full_state`'s dicts into a sharded model (each rank keeps its shards)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optimizer_state.get("state"):      # plain SGD keeps none (and torch refuses to load it)
        set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
