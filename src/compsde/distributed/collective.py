"""One message reduced over a process group, synchronously: encode → collective(s) → decode.

The DDP hook issues its collectives asynchronously and decodes in a ``.then()`` callback
(:mod:`.hooks`); FSDP2 calls its reduce-scatter and its all-reduce hook synchronously, in the
same order on every rank, so the sharded paths (:mod:`.fsdp`, :mod:`.hsdp`) reduce with
:func:`reduce_over` instead: the same codecs (:mod:`.codecs`), each collective issued and waited
for in turn, nothing waited for inside a callback.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.distributed as dist
from torch import Tensor

from .codecs import ALLREDUCE, SCATTER, BucketKey, Codec
from .protocol import Protocol

_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def reduce_over(state: Protocol, codec: Codec, grad: Tensor, key: BucketKey,
                group: dist.ProcessGroup | None, out: Tensor,
                account: Callable[[Tensor], None] | None = None) -> Tensor:
    """``out`` ← ``mean_i m_i`` over the ``state.world`` ranks of ``group`` (THEORY.md §2),
    where this rank's message is ``m = C(grad)`` keyed by ``key``; counts the traffic
    (``state.account``, or ``account(payload)`` where the caller counts it otherwise).

    ``grad`` may be consumed (the mean codec divides it in place); ``out`` may be ``grad``.
    """
    payload = state.prepare(grad, key, codec)
    if account is None:
        state.account(codec, payload)
    else:
        account(payload)
    if codec.collective == SCATTER:           # sign reduce-scatter: signs, then the counts
        dist.all_to_all_single(codec.received.view(-1), payload.view(-1), group=group)
        outgoing = codec.replicate(state.count_shard(codec, codec.received))
        combined = codec.gathered
        dist.all_to_all_single(combined.view(-1), outgoing.view(-1), group=group)
    elif codec.collective == ALLREDUCE:
        dist.all_reduce(payload, group=group)
        combined = payload
    else:
        combined = codec.gathered
        _all_gather(combined.view(-1), payload, group=group)
    return state.finish(codec, combined, key, out)
