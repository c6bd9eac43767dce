"""DDP communication hooks for DSGD, DCSGD and DSignSGD (THEORY.md §2).

``register(ddp_model, "dsignsgd", seed=0)`` registers one hook on a
``torch.nn.parallel.DistributedDataParallel`` model; afterwards every backward pass leaves
``mean_i m_i`` (the server's average of the N ranks' messages) in the ``.grad`` of every
parameter, so a plain ``torch.optim.SGD(lr=η)`` step performs ``x ← x − η · mean_i m_i``:

- DSGD ``m_i = g_i`` (mean allreduce);
- DCSGD ``m_i = C_i(g_i)`` for an unbiased compressor, each DDP bucket being one message;
- DSignSGD ``m_i = sign(g_i)`` with the server *mean* of the signs (not majority vote).
- beyond the paper (THEORY.md §8): ``dsignsgd:vote=majority`` (the server's vote
  ``sign(Σ_i sign g_i)``) and ``signum:beta=B[,vote=majority]`` (each rank sends the sign of its
  momentum, kept in the state and checkpointed with it), ``scaledsign`` (the mean of the
  ranks' scaled signs, scale ``‖g‖₁/d`` per bucket), ``ef-signsgd`` and ``ef21:<compressor>``
  (error feedback, §8b: each rank's error or ``h``/``ĥ`` buffers kept in the state, per bucket,
  following the parameters across bucket rebuilds, checkpointed with it).

Each hook call issues its collectives from the hook body and decodes in a ``.then()``
callback that never waits on anything (PyTorch's PowerSGD hook waits inside ``.then()`` and
deadlocks on gloo with several buckets; docs/DESIGN.md, "No waiting inside `.then()`"). The
sign reduce-scatter's second collective (the counts to every rank, an all-to-all) is issued
from the next bucket's hook body (:class:`_ScatterStage`), so every rank issues collectives in
one order. The wire of every
method is documented in :mod:`.codecs`; traffic accounting in :mod:`.wire`.

Bucket layouts: DDP reduces the first backward pass in one bucket, then rebuilds its buckets
in gradient order. :func:`prime_buckets` settles the layout before the first real step (so a
resumed run and an uninterrupted one use the same messages); :attr:`HookState.layout` records,
per bucket index, the names of its parameters in buffer order as last seen, so an in-process
simulation (:class:`~compsde.distributed.AgentSimulator`) can form the same messages.

Example::

    ddp = DistributedDataParallel(model)
    state = compsde.distributed.register(ddp, "dcsgd:randk:ratio=0.01", seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn(ddp(x), y).backward(); opt.step()      # one DCSGD step
    state.bytes_sent, state.bytes_fp32_allreduce    # this rank's traffic vs fp32 allreduce
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations at runtime
# (``bucket: dist.GradBucket``, return ``torch.futures.Future[torch.Tensor]``).
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..methods import Method
from ..noise import NoiseLaw
from .codecs import ALLREDUCE, SCATTER, BucketKey, Codec
from .protocol import Protocol

# torch >= 2.13 names it all_gather_single (all_gather_into_tensor warns it is deprecated).
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class HookState(Protocol):
    """State of the communication hook of one rank (see :class:`.protocol.Protocol` for the
    knobs). Adds the process group, the rank's bucket layout and pickling for checkpoints:
    ``torch.save(state)`` / ``torch.load`` keep ``seed``, ``step``, the options and the
    counters; the process group is not saved and becomes the default group on load (pass the
    loaded state to :func:`register` to attach it to a model and group again).
    """

    def __init__(self, method: Method | str, seed: int = 0,
                 process_group: dist.ProcessGroup | None = None, **options: Any):
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("process_group: torch.distributed is not initialised; call "
                             "torch.distributed.init_process_group first (or use "
                             "compsde.distributed.AgentSimulator for one process)")
        world = dist.get_world_size(process_group)
        rank = dist.get_rank(process_group)
        super().__init__(method, seed, world, rank, **options)
        self.process_group = process_group
        self.layout: dict[int, tuple[str, ...]] = {}
        self._names: dict[int, str] = {}
        self.passthrough = False
        self.pending: list[_ScatterStage] = []

    def attach(self, module: nn.Module) -> None:
        """Remember parameter names of ``module`` so layouts can name them."""
        self._names = {id(p): name for name, p in module.named_parameters()}

    def record_layout(self, bucket: dist.GradBucket) -> None:
        params = bucket.parameters()
        names = tuple(self._names.get(id(p), f"?{i}") for i, p in enumerate(params))
        self.layout[bucket.index()] = names
        if self.method.stateful:        # its momentum follows the parameters across rebuilds
            self.set_layout(bucket.index(), tuple(zip(names, (p.numel() for p in params),
                                                      strict=True)))

    def __getstate__(self) -> dict[str, Any]:
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.process_group = None
        self.layout = {}
        self._names = {}
        self.passthrough = False
        self.pending = []


def comm_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
    """The hook: noise (optional) → encode → one async collective → ``.then(decode)``."""
    buffer = bucket.buffer()
    index = bucket.index()
    if state.passthrough:               # prime_buckets: leave the local gradient untouched
        done: torch.futures.Future[Tensor] = torch.futures.Future()
        done.set_result(buffer)
        return done
    if index == 0:
        state.begin_step()
        state.pending.clear()
    key = BucketKey(state.seed, state.step, index, state.rank)
    state.record_layout(bucket)
    codec = state.codec(index, buffer)
    payload = state.prepare(buffer, key, codec)
    state.account(codec, payload)
    earlier, state.pending = state.pending, []
    group = state.process_group
    if codec.collective == SCATTER:
        work = dist.all_to_all_single(codec.received.view(-1), payload.view(-1), group=group,
                                      async_op=True)
        stage = _ScatterStage(codec, key, buffer, work, torch.futures.Future())
        future = stage.result
    else:
        combined = payload if codec.collective == ALLREDUCE else codec.gathered
        if codec.collective == ALLREDUCE:
            work = dist.all_reduce(payload, group=group, async_op=True)
        else:
            work = _all_gather(combined.view(-1), payload, group=group, async_op=True)

        def decode(fut: torch.futures.Future) -> Tensor:
            fut.value()                    # re-raises a failed collective; never waits
            return state.finish(codec, combined, key, buffer)

        future = work.get_future().then(decode)
    for previous in earlier:               # second halves of earlier buckets, in bucket order
        previous.gather_counts(state)
    if codec.collective == SCATTER:
        if bucket.is_last():
            stage.gather_counts(state)
        else:
            state.pending.append(stage)
    if bucket.is_last():
        state.step += 1
    return future


class _ScatterStage:
    """A bucket of the sign reduce-scatter between its two collectives.

    The counts travel as an all-to-all of one message replicated for every rank: the bytes of
    an all-gather, ``(N−1)·m``, with all ``N − 1`` transfers at once instead of a ring's
    ``N − 1`` dependent hops (8 gloo ranks on 2 cores: a 4 KB all-gather takes about 13 ms,
    an all-to-all 4.5 ms; BENCHMARKS.md). That second collective needs the counts of the
    first one's result, so it is issued from the hook body of the *next* bucket (or of this
    one when it is the last): DDP calls hooks in bucket order on every rank, so every rank
    issues ``signs(0), signs(1), counts(0), signs(2), counts(1), …`` in the same order, and
    the all-to-all it waits for has had a bucket's backward to finish. No callback waits or
    issues a collective.
    """

    __slots__ = ("buffer", "codec", "key", "result", "work")

    def __init__(self, codec: Codec, key: BucketKey, buffer: Tensor, work: Any,
                 result: torch.futures.Future):
        self.codec, self.key, self.buffer, self.work, self.result = (codec, key, buffer, work,
                                                                     result)

    def gather_counts(self, state: "HookState") -> None:
        self.work.wait()                   # hook body: raises if the all-to-all failed
        codec, key, buffer, result = self.codec, self.key, self.buffer, self.result
        gathered = codec.gathered
        outgoing = codec.replicate(state.count_shard(codec, codec.received))
        work = dist.all_to_all_single(gathered.view(-1), outgoing.view(-1),
                                      group=state.process_group, async_op=True)

        def decode(fut: torch.futures.Future) -> None:
            try:
                fut.value()
                result.set_result(state.finish(codec, gathered, key, buffer))
            except Exception as exc:      # reaches DDP through the bucket's future
                result.set_exception(exc)

        work.get_future().then(decode)


def register_ddp(ddp_model: nn.parallel.DistributedDataParallel,
                 method: Method | str | HookState, seed: int = 0,
                 process_group: dist.ProcessGroup | None = None, *,
                 noise: NoiseLaw | str | None = None, sign_wire: str = "auto",
                 randomness: str = "shared", on_nonfinite: str = "raise") -> HookState:
    """Register the hook of ``method`` on ``ddp_model`` (the DDP branch of
    :func:`compsde.distributed.register`, which documents the arguments)."""
    if getattr(ddp_model, "_compsde_state", None) is not None:
        raise ValueError("ddp_model: compsde is already registered on this model (DDP takes "
                         "one communication hook); register once per model")
    model_group = ddp_model.process_group
    if process_group is not None and (dist.get_process_group_ranks(process_group)
                                      != dist.get_process_group_ranks(model_group)):
        raise ValueError(f"process_group holds ranks "
                         f"{dist.get_process_group_ranks(process_group)} but ddp_model "
                         f"reduces over ranks {dist.get_process_group_ranks(model_group)}; "
                         f"omit process_group (the model's is used)")
    process_group = model_group
    if isinstance(method, HookState):
        state = method
        state.process_group = process_group
        world = dist.get_world_size(process_group)
        if world != state.world:
            raise ValueError(f"process_group has {world} ranks but the saved hook state was "
                             f"made for {state.world}; resume with the same world size")
        state.rank = dist.get_rank(process_group)
    else:
        state = HookState(method, seed, process_group, noise=noise, sign_wire=sign_wire,
                          randomness=randomness, on_nonfinite=on_nonfinite)
    for name, param in ddp_model.module.named_parameters():
        if param.requires_grad and not param.is_floating_point():
            raise ValueError(f"ddp_model parameter {name} is {param.dtype}; the hooks need "
                             f"floating-point gradients")
    if state.world == 1:
        warnings.warn("world size 1: the hook applies the method's compression but has no "
                      "partner to average with (DSignSGD reduces to signSGD); launch with "
                      "torchrun --nproc-per-node N for N ranks", stacklevel=3)
    state.attach(ddp_model.module)
    ddp_model.register_comm_hook(state, comm_hook)
    ddp_model._compsde_state = state
    return state


def prime_buckets(ddp_model: nn.parallel.DistributedDataParallel, state: HookState,
                  *inputs: Any) -> None:
    """Make DDP settle its bucket layout now, without a training step.

    DDP reduces the first backward pass in one bucket and then rebuilds its buckets in the
    order gradients arrive. Methods whose message depends on the bucket (Rand-k's k, QSGD's
    norm) would then use another layout in the first step of a run than later — and a run
    resumed from a checkpoint another layout than an uninterrupted one. This runs one forward
    and backward pass on ``inputs`` in eval mode with the hook passing gradients through (no
    collective, no counter, no step), so the rebuilt layout is used from the first real step.
    Gradients are cleared afterwards; parameters and buffers are unchanged.
    """
    module = ddp_model.module
    training = module.training
    state.passthrough = True
    try:
        module.eval()
        output = ddp_model(*inputs)
        output.float().sum().backward()
    finally:
        state.passthrough = False
        module.train(training)
        ddp_model.zero_grad(set_to_none=True)
