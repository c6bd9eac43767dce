"""The paper's methods as FSDP2's gradient reduce-scatter (``fully_shard``, THEORY.md §2).

``register(model, "dsignsgd", seed=0)`` on a module sharded with
``torch.distributed.fsdp.fully_shard`` installs one :class:`MethodReduceScatter` as the custom
reduce-scatter of every unit of it (one ``fully_shard`` call, grouped modules included, is one
message keyed by its index in :func:`.fsdp_units.fsdp_units`), with FSDP's own averaging
switched off (``set_force_sum_reduction_for_comms(True)``, ``set_gradient_divide_factor(1)``).
After ``backward()`` each rank's sharded ``.grad`` holds its shard of ``mean_i m_i``, so a plain
``torch.optim.SGD`` step on the sharded parameters performs the method:

- DSGD: ``g_i / N`` reduce-scattered with a sum (FSDP's default traffic);
- DCSGD: the codecs of :mod:`.codecs` on the rank's whole padded flat gradient of the unit
  (shared-seed Rand-k/Bernoulli: an allreduce of the kept values only; QSGD/natural: an
  all-gather of the encodings), of which the rank keeps its shard;
- DSignSGD: the first half of the sign reduce-scatter (:class:`.codecs.SignScatterCodec`):
  an all-to-all of packed signs, then the rank counts its shard — no all-gather.
- scaled sign, EF-signSGD and EF21 (THEORY.md §8b): the codec of their compressor on the
  rank's whole padded flat gradient of the unit, like DCSGD (scaled sign: an all-gather of
  float32 scale + packed signs, the scale ``‖p‖₁/d`` taken over the unit's padded flat
  gradient), of which the rank keeps its shard. Their state buffers (EF21: ``h`` and ``ĥ``;
  EF-signSGD: ``e``) are the size of the unit's padded flat gradient, per rank: register
  refuses (ValueError naming the bytes) when the device's available memory cannot hold them.

FSDP calls the reduce-scatter synchronously and in the same order on every rank; each call
issues its collectives and waits for them in order, so nothing waits in a callback. On one
rank FSDP skips the reduce-scatter; the method then runs in the unit's all-reduce hook
(``set_all_reduce_hook``) on the rank's own gradient, as the DDP hook does at world size 1.
A step is one optimizer step's worth of reductions (:class:`.fsdp_units.StepTracker`).
HSDP (a 2-D mesh) is served by :mod:`.hsdp`. Not supported (a ``ValueError`` each): a plain
module, FSDP1, reduce dtypes other than float32/float64 for the quantisers, a unit with
several meshes.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.fsdp._fully_shard._fsdp_api import ReduceScatter

from ..methods import Method
from .codecs import ALLREDUCE, SCATTER, BucketKey, Codec, all_finite
from .collective import reduce_over
from .fsdp_units import StepTracker, Unit, fsdp_units, unmanaged_parameters
from .protocol import Protocol
from .sign_codecs import SignScatterCodec
from .wire import allreduce_bytes

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
    like the DDP hook's :class:`~compsde.distributed.HookState` for checkpoints, and has
    ``state_dict()`` / ``load_state_dict()`` for a framework's checkpointing.

    :attr:`step` advances once every unit with trainable parameters has been reduced
    (:class:`.fsdp_units.StepTracker`); :attr:`units` names them in key order. Counters compare
    with :attr:`bytes_fp32_reduce_scatter`, FSDP's default fp32 reduce-scatter of the same units.
    """

    _PICKLED = (*Protocol._PICKLED, "bytes_fp32_reduce_scatter")

    def __init__(self, method: Method | str, seed: int = 0,
                 process_group: dist.ProcessGroup | None = None, **options: Any):
        world = dist.get_world_size(process_group)
        super().__init__(method, seed, world, dist.get_rank(process_group), **options)
        self.process_group = process_group
        self.tracker = StepTracker()
        self.bytes_fp32_reduce_scatter = 0.0

    @property
    def units(self) -> list[str]:
        """The units' names (their modules, ``+``-joined), in the order of their keys."""
        return list(self.tracker.names)

    def counters(self) -> dict[str, float]:
        return {**super().counters(), "bytes_fp32_reduce_scatter": self.bytes_fp32_reduce_scatter}

    def key_for(self, unit: int) -> BucketKey:
        """The key ``(seed, step, unit, rank)`` of ``unit``'s message in the current step."""
        if self.tracker.begin(unit, self.step):
            self.begin_step()
        return BucketKey(self.seed, self.step, unit, self.rank)

    def reduced(self, unit: int) -> None:
        if self.tracker.done(unit):
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
        self.tracker = StepTracker()


class MethodReduceScatter(ReduceScatter):
    """FSDP2's ``ReduceScatter`` for unit ``unit``: ``output`` ← this rank's shard of
    ``mean_i m_i`` of the ranks' flat ``input`` (module docstring)."""

    compsde_comm = True       # marks comms compsde installed (a second register() is refused)

    def __init__(self, state: FSDPState, unit: int):
        self.state, self.unit = state, unit

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
        key = state.key_for(self.unit)
        codec = state.codec(self.unit, input_tensor)
        if state.signs:                   # DSignSGD, its vote, Signum: the sign reduce-scatter
            self._sign_shard(codec, input_tensor, output_tensor, key, group)
        elif (codec.collective == ALLREDUCE and not codec.checks_locally
              and state.method.feedback is None):                          # DSGD
            self._mean(codec, input_tensor, output_tensor, key, group)
        else:
            self._full_then_shard(codec, input_tensor, output_tensor, key, group)
        state.reduced(self.unit)
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
        vote = state.method.server == "vote"
        if not (isinstance(codec, SignScatterCodec) and codec.rows_of_input
                and codec.shard == shard and codec.dtype == grad.dtype):
            codec = state._codecs[self.unit] = SignScatterCodec(
                grad.numel(), state.world, grad.dtype, grad.device, shard=shard, vote=vote)
        send = state.prepare(grad, key, codec)
        dist.all_to_all_single(codec.received.view(-1), send.view(-1), group=group)
        state.account_shard(*codec.traffic(send), grad.numel(), grad.element_size())
        state.finish(_ShardView(codec), codec.received, key, out)

    def _full_then_shard(self, codec: Codec, grad: Tensor, out: Tensor, key: BucketKey,
                         group: dist.ProcessGroup) -> None:
        state = self.state
        d, size = grad.numel(), grad.element_size()
        full = torch.empty_like(grad)
        reduce_over(state, codec, grad, key, group, full,
                    account=lambda payload: state.account_shard(*codec.traffic(payload), d, size))
        out.copy_(full.view(state.world, -1)[state.rank])


class SoloReduce:
    """The all-reduce hook of unit ``unit`` on one rank, where FSDP skips the reduce-scatter:
    ``grad`` ← the method's ``m = C(g)`` of the rank's own gradient (no partner to average
    with; DSignSGD is signSGD), as the DDP hook does at world size 1."""

    compsde_comm = True

    def __init__(self, state: FSDPState, unit: int, group: dist.ProcessGroup):
        self.state, self.unit, self.group = state, unit, group

    def __call__(self, grad: Tensor) -> None:
        state = self.state
        _check_dtype(state, grad.dtype)
        key = state.key_for(self.unit)
        reduce_over(state, state.codec(self.unit, grad), grad, key, self.group, grad)
        state.reduced(self.unit)


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


def _check_dtype(state: Protocol, dtype: torch.dtype, setting: str = "reduce_dtype") -> None:
    quantiser = state.compressor.name in ("qsgd", "natural")       # dcsgd or ef21
    allowed = _QUANTISER_FLOATS if quantiser else _FLOATS
    if dtype not in allowed:
        raise ValueError(f"{setting} {dtype} is not supported by {state.method_spec}; use "
                         f"MixedPrecisionPolicy(reduce_dtype=...) with one of "
                         f"{', '.join(str(t) for t in allowed)}")


def _reduce_dtype(unit: Unit) -> tuple[torch.dtype, str]:
    """The dtype the unit's gradients are reduced in, and the setting that decides it."""
    policy = unit.group.mp_policy
    if policy.reduce_dtype is not None:
        return policy.reduce_dtype, "reduce_dtype"
    if policy.param_dtype is not None:
        return policy.param_dtype, "param_dtype (gradients are reduced in it)"
    return unit.group.fsdp_params[0].sharded_param.dtype, "parameter dtype"


def is_registered(units: list[Unit]) -> bool:
    """Whether compsde already installed its comms on any of ``units``."""
    return any(getattr(u.group._reduce_scatter_comm, "compsde_comm", False)
               or getattr(u.group._all_reduce_hook, "compsde_comm", False) for u in units)


def check_units(model: nn.Module, units: list[Unit], state: Protocol) -> None:
    """``ValueError`` for what the methods cannot serve, before any collective: a second
    registration, a reduce dtype the method refuses; a warning for parameters no unit manages."""
    if is_registered(units):
        raise ValueError("model: compsde is already registered on this model; register once "
                         "per model (to resume, pass the saved state to register() on a "
                         "freshly sharded model)")
    outside = unmanaged_parameters(model, units)
    if outside:
        warnings.warn(f"model: {len(outside)} trainable parameter(s) are in no fully_shard "
                      f"unit ({', '.join(outside[:3])}{', …' if len(outside) > 3 else ''}; "
                      f"ignored_params or an unsharded root): FSDP does not reduce their "
                      f"gradients, so neither does the method", stacklevel=4)
    for unit in units:
        dtype, setting = _reduce_dtype(unit)
        _check_dtype(state, dtype, setting)


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``: CUDA's free memory
    (``torch.cuda.mem_get_info``), else the system's available memory (``MemAvailable`` of
    /proc/meminfo, or free pages × page size)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def state_buffer_bytes(units: list[Unit], state: Protocol, shards: int = 1) -> int:
    """Bytes of the state buffers ``state.method`` keeps on this rank for ``units``: per
    trainable unit ``state_buffers`` × its padded flat gradient (the reduce-scatter input,
    every shard's rows) ÷ ``shards`` (HSDP: a rank holds its shard), in the reduce dtype."""
    total = 0
    for unit in units:
        if not unit.trainable:
            continue
        dtype, _ = _reduce_dtype(unit)
        sizes = sum(p.padded_sharded_param_size.numel() for p in unit.group.fsdp_params
                    if p.sharded_param.requires_grad)
        world = dist.get_world_size(unit.group.mesh_info.shard_process_group)
        total += sizes * world // shards * torch.empty((), dtype=dtype).element_size()
    return total * state.method.state_buffers


def check_state_memory(units: list[Unit], state: Protocol, shards: int = 1) -> int:
    """``ValueError`` before any step when the device cannot hold the method's state buffers
    (:func:`state_buffer_bytes` against :func:`available_memory`); returns the bytes needed."""
    needed = state_buffer_bytes(units, state, shards)
    if not needed:
        return 0
    device = units[0].group.device
    free = available_memory(device)
    if needed > free:
        raise ValueError(f"method {state.method_spec} keeps {state.method.state_buffers} "
                         f"gradient-sized buffer(s) per rank ({', '.join(state.buffer_names)}): "
                         f"{needed} bytes on {device}, but only {free} bytes are available; "
                         f"use a stateless method (e.g. dsignsgd, scaledsign) or free memory")
    return needed


def model_units(model: nn.Module) -> list[Unit]:
    """:func:`.fsdp_units.fsdp_units`, refusing a model without any."""
    units = fsdp_units(model)
    if not units:
        raise ValueError("model: no fully_shard module with parameters was found")
    return units


def _check_group(process_group: dist.ProcessGroup | None, model_group: dist.ProcessGroup,
                 what: str) -> None:
    if process_group is None:
        return
    given = dist.get_process_group_ranks(process_group)
    wanted = dist.get_process_group_ranks(model_group)
    if given != wanted:
        raise ValueError(f"process_group holds ranks {given} but the model is {what} over "
                         f"ranks {wanted}; omit process_group (the model's is used)")


def register_fsdp(model: FSDPModule, method: Method | str | FSDPState, seed: int = 0,
                  process_group: dist.ProcessGroup | None = None, **options: Any) -> FSDPState:
    """Install the method on every unit of ``model`` (module docstring); a model on a 2-D
    (replicate, shard) mesh goes to :func:`.hsdp.register_hsdp`."""
    from torch.distributed.fsdp._fully_shard._fsdp_common import DDPMeshInfo

    units = model_units(model)
    if isinstance(units[0].group.mesh_info, DDPMeshInfo):
        from .hsdp import register_hsdp

        return register_hsdp(model, units, method, seed, process_group, **options)
    sign_wire = options.pop("sign_wire", "auto")
    if sign_wire not in ("auto", "scatter"):
        raise ValueError(f"sign_wire must be 'auto' or 'scatter' under FSDP2 (its reduce-"
                         f"scatter keeps a shard; no all-gather), got {sign_wire!r}")
    group = units[0].group.mesh_info.shard_process_group
    _check_group(process_group, group, "sharded")
    if isinstance(method, FSDPState):
        state = method
        if dist.get_world_size(group) != state.world:
            raise ValueError(f"the model is sharded over {dist.get_world_size(group)} ranks "
                             f"but the saved state was made for {state.world}; resume with "
                             f"the same world size")
        state.process_group = group
        state.rank = dist.get_rank(group)
    else:
        state = FSDPState(method, seed, group, sign_wire="scatter", **options)
    check_units(model, units, state)
    check_state_memory(units, state)
    state.tracker.bind(units)
    for unit in units:
        unit.module.set_force_sum_reduction_for_comms(True)
        unit.module.set_gradient_divide_factor(1.0)
        if state.world == 1:
            unit.module.set_all_reduce_hook(SoloReduce(state, unit.index, group))
        else:
            unit.module.set_custom_reduce_scatter(MethodReduceScatter(state, unit.index))
    return state


def shard_blocks(model: nn.Module, mesh: Any = None) -> nn.Module:
    """``fully_shard`` every top-level block of ``model`` that has parameters, then the root
    (the trainer's ``--parallel fsdp``; with an (R, S) ``mesh``, ``--parallel hsdp``); returns
    ``model``."""
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(p.requires_grad for p in child.parameters()):
            fully_shard(child, mesh=mesh)
    fully_shard(model, mesh=mesh)
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
