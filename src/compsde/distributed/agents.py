"""N agents in one process: the hooks' algorithm without collectives.

:class:`AgentSimulator` runs the same codecs as the DDP hook (:mod:`.codecs`) on the N agents'
bucket gradients, replacing the collective by its definition — the sum of the N payloads for an
allreduce, their stack for an all-gather, and for the sign reduce-scatter row ``r`` of every
payload to agent ``r``, whose reduced messages are stacked again. Given the same per-rank
gradients, seed and bucket layout it reproduces the hook's update: bitwise for DSignSGD,
Rand-k's kept coordinates and, with two agents, every sum (``a + b`` is exact in either order);
to rounding for sums over more agents (the ring allreduce adds in another order).

It is the engine of ``compsde train --simulate-agents N`` and the reference of the multi-process
tests. Layout helpers split a model's parameters into buckets like DDP does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int
from ..methods import Method
from .codecs import ALLREDUCE, SCATTER, BucketKey
from .protocol import Protocol

Layout = dict[int, tuple[str, ...]]


class AgentSimulator(Protocol):
    """The method of :class:`Protocol` for ``agents`` agents in one process.

    Counters are those of one rank (every rank moves the same bytes), as in the hook.
    """

    def __init__(self, method: Method | str, agents: int, seed: int = 0, **options: Any):
        super().__init__(method, seed, check_int("agents", agents, minimum=1), 0, **options)

    @property
    def agents(self) -> int:
        return self.world

    def reduce_bucket(self, grads: Tensor, bucket: int, out: Tensor | None = None) -> Tensor:
        """``mean_i m_i`` for one bucket; ``grads`` is ``(agents, d)`` and is consumed."""
        if grads.dim() != 2 or grads.shape[0] != self.world:
            raise ValueError(f"grads must have shape (agents={self.world}, d), got "
                             f"{tuple(grads.shape)}")
        if bucket == 0:
            self.begin_step()
        codec = self.codec(bucket, grads[0])
        payloads = []
        for rank in range(self.world):
            key = BucketKey(self.seed, self.step, bucket, rank)
            payloads.append(self.prepare(grads[rank], key, codec).clone())
        self.account(codec, payloads[0])
        if codec.collective == SCATTER:       # all-to-all, each rank's reduce, all-gather
            combined = codec.gather_buffer(codec.gathered.shape[1], torch.uint8)
            for rank in range(self.world):
                received = torch.stack([payload[rank] for payload in payloads])
                combined[rank].copy_(self.count_shard(codec, received))
        elif codec.collective == ALLREDUCE:
            combined = payloads[0]
            for payload in payloads[1:]:
                combined.add_(payload)
        else:
            combined = codec.gather_buffer(payloads[0].numel(), payloads[0].dtype)
            for rank, payload in enumerate(payloads):
                combined[rank].copy_(payload)
        if out is None:
            out = torch.empty_like(grads[0])
        return self.finish(codec, combined, BucketKey(self.seed, self.step, bucket, 0), out)

    def reduce(self, grads: Mapping[str, Tensor], layout: Layout) -> dict[str, Tensor]:
        """One step: ``grads[name]`` is ``(agents, *shape)``; returns the averaged gradients.

        Buckets are processed in index order, then :attr:`step` advances.
        """
        result: dict[str, Tensor] = {}
        for bucket in sorted(layout):
            names = layout[bucket]
            if self.method.stateful:
                self.set_layout(bucket, tuple((n, grads[n][0].numel()) for n in names))
            flat = torch.cat([grads[n].reshape(self.world, -1) for n in names], dim=1)
            mean = self.reduce_bucket(flat, bucket)
            offset = 0
            for name in names:
                size = grads[name][0].numel()
                result[name] = mean[offset:offset + size].view_as(grads[name][0])
                offset += size
        self.step += 1
        return result


def ddp_layout(module: nn.Module, bucket_cap_mb: float = 25.0) -> Layout:
    """The bucket layout DDP settles on for a feed-forward ``module`` (after its rebuild, see
    :func:`.hooks.prime_buckets`): parameters in reverse definition order (the order their
    gradients arrive), a new bucket once one holds ``bucket_cap_mb`` MiB or more.
    """
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("module has no trainable parameters")
    cap = bucket_cap_mb * 1024 * 1024
    buckets: list[list[str]] = [[]]
    size = 0
    for name, param in reversed(named):
        if size >= cap:
            buckets.append([])
            size = 0
        buckets[-1].append(name)
        size += param.numel() * param.element_size()
    return {b: tuple(names) for b, names in enumerate(buckets)}


def flat_grads(module: nn.Module, names: Sequence[str]) -> Tensor:
    """Concatenated ``.grad`` of the named parameters (zeros where a grad is None)."""
    params = dict(module.named_parameters())
    parts = [params[n].grad.reshape(-1) if params[n].grad is not None
             else torch.zeros(params[n].numel(), dtype=params[n].dtype,
                              device=params[n].device) for n in names]
    return torch.cat(parts)
