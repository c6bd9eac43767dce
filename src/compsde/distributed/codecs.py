"""One method's wire for one gradient bucket: encode → (one collective) → decode.

A codec turns a rank's flat bucket gradient ``g_i`` into the payload it contributes to one
collective, and turns the collective's result into the server's mean ``mean_i m_i`` of
THEORY.md §2, written into the bucket. Both the DDP hook (:mod:`.hooks`) and the in-process
simulation of N agents (:mod:`.agents`) run the *same* codec; only the collective differs (a
real ``all_reduce``/``all_gather_into_tensor`` vs a sum/stack of the N payloads).

Every payload that does not carry the gradient in full also carries a status slot counting
ranks whose local gradient was non-finite, so every rank learns about a NaN on any rank from
the same collective and all ranks raise (or skip) together — no hang, no extra collective.

| codec | method | collective | payload per rank |
|---|---|---|---|
| MeanCodec | DSGD, DCSGD(identity) | allreduce | ``d`` values / N |
| SharedSparseCodec | DCSGD(Rand-k, Bernoulli) | allreduce | kept values + 1 |
| IndependentSparseCodec | same, per-rank coordinates | all-gather | kept (padded) + 1 |
| GatherCodec | DCSGD(QSGD, natural) | all-gather | compressor's bytes + 1 |
| SignBitsCodec | DSignSGD | all-gather | ``ceil(d/8)`` bytes + 1 |
| SignInt8Codec | DSignSGD, many ranks | allreduce (uint8) | ``d + 1`` bytes |
| SignScatterCodec | DSignSGD, N ≥ 5 | all-to-all + all-gather | ``≈(1 + b)·d/8N`` bytes |

Methods beyond the paper take these codecs by their compressor (:func:`make_codec`):
``scaledsign`` and ``ef-signsgd`` the GatherCodec of the scaled sign (float32 scale + packed
signs, ``4 + ceil(d/8)`` bytes + 1), ``ef21:<compressor>`` the codec of its compressor (Top-k:
GatherCodec of ``k`` int32 indices and values; Rand-k/Bernoulli: the sparse codecs; identity:
MeanCodec). Error feedback needs each rank's own message exactly as the others decode it:
:meth:`Codec.own_message` (for MeanCodec, :attr:`Codec.lossless`: the message is the input).

Methods beyond the paper whose ranks send signs (THEORY.md §8) take the same sign codecs:
Signum encodes the rank's momentum, and the majority vote decodes ``sign(2K − N)`` from the
count ``K`` of non-negative signs (bits, int8) or, on the reduce-scatter, sends the shard's vote
in ``b = 1`` bit per coordinate (2 for even N: the tie is a third value) instead of the count.

The sign codecs live in :mod:`.sign_codecs`. The sign reduce-scatter is the one two-collective
wire: ``SignScatterCodec.encode`` gives the all-to-all's send rows, ``.reduce`` turns the
received rows into the message of the all-gather, ``.decode`` reads the gathered rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..compressors import Compressor, WireMessage
from .wire import (
    AUTO_SIGN_WIRES,
    SHARED,
    all_gather_bytes,
    allreduce_bytes,
    best_sign_wire,
    generator_for,
)

ALLREDUCE, ALL_GATHER, SCATTER = "allreduce", "all_gather", "reduce_scatter"


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite: a finite sum proves it in one vectorised pass
    (NaN or ±inf in any entry makes the sum non-finite); only a non-finite sum (overflow, or a
    real NaN/inf) pays for the exact elementwise check."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


@dataclass(frozen=True)
class BucketKey:
    """Where the randomness of one rank's message comes from: ``(seed, step, bucket, rank)``."""

    seed: int
    step: int
    bucket: int
    rank: int


class Codec(ABC):
    """Encode/decode for one bucket of ``d`` entries on ``world`` ranks (module docstring)."""

    collective: ClassVar[str]
    # whether this rank's message is its input itself (no compression; error feedback then
    # reads it before encode, which may consume the input)
    lossless: ClassVar[bool] = False

    def __init__(self, d: int, world: int, dtype: torch.dtype, device: torch.device):
        self.d, self.world, self.dtype, self.device = d, world, dtype, device
        self.gathered: Tensor | None = None       # (world, m) receive buffer of all_gather

    @abstractmethod
    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        """This rank's payload (1-D) for ``grad``; ``bad`` marks a non-finite local gradient.

        The payload may alias ``grad`` or a buffer of the codec: use it before the next call.
        """

    @abstractmethod
    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        """Write ``mean_i m_i`` into ``out``; return how many ranks reported non-finite values
        (for :class:`MeanCodec`: 1 if the mean itself is non-finite, else 0).

        ``combined`` is the summed payload (allreduce) or the ``(world, m)`` gathered rows.
        """

    def own_message(self, payload: Tensor, key: BucketKey) -> Tensor:
        """This rank's message ``m = C(grad)`` from the ``payload`` :meth:`encode` just made,
        as every rank reconstructs it (error feedback, THEORY.md §8b); a codec buffer, valid
        until the next call."""
        raise ValueError(f"{type(self).__name__} cannot give a rank's own message; error "
                         f"feedback needs a compressor with an own-message decode (topk, "
                         f"scaledsign, identity, randk, bernoulli, qsgd, natural)")

    def own_buffer(self) -> Tensor:
        """The ``(d,)`` buffer :meth:`own_message` writes into, reused across steps."""
        buf = getattr(self, "_own", None)
        if buf is None:
            buf = self._own = torch.empty(self.d, dtype=self.dtype, device=self.device)
        return buf

    def gather_buffer(self, size: int, dtype: torch.dtype) -> Tensor:
        """The ``(world, size)`` receive buffer of an all-gather, reused across steps."""
        buf = self.gathered
        if buf is None or buf.shape != (self.world, size) or buf.dtype != dtype:
            buf = self.gathered = torch.empty((self.world, size), dtype=dtype,
                                              device=self.device)
        return buf

    @property
    def checks_locally(self) -> bool:
        """Whether ``encode`` needs the local finiteness flag (else the result is checked)."""
        return True

    def encode_checked(self, grad: Tensor, key: BucketKey) -> Tensor:
        """:meth:`encode` with the local finiteness flag found here (codecs that can find it
        while encoding override this to read ``grad`` once)."""
        return self.encode(grad, key, self.checks_locally and not all_finite(grad))

    def traffic(self, payload: Tensor) -> tuple[int, float]:
        """``(payload bytes, bytes moved per rank)`` of one call (:mod:`.wire`'s ring sizes)."""
        nbytes = payload.numel() * payload.element_size()
        if self.collective == ALLREDUCE:
            return nbytes, allreduce_bytes(nbytes, self.world)
        return nbytes, all_gather_bytes(nbytes, self.world)


class MeanCodec(Codec):
    """DSGD: allreduce of ``g_i / N`` in place, like PyTorch's default allreduce hook."""

    collective = ALLREDUCE
    lossless = True

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        return grad.div_(self.world)

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        if combined.data_ptr() != out.data_ptr():
            out.copy_(combined)
        return 0 if all_finite(out) else 1

    @property
    def checks_locally(self) -> bool:
        return False


def _bucket_k(compressor: Compressor, d: int, bucket: int) -> int:
    k = getattr(compressor, "k", None)
    if k is not None and k > d:
        raise ValueError(f"compressor {compressor.spec} keeps k={k} coordinates but bucket "
                         f"{bucket} has only d={d}; use a ratio (e.g. randk:ratio=0.01), a "
                         f"smaller k or a larger bucket_cap_mb")
    return compressor.k_for(d)


class _Sparse(Codec):
    """Rand-k (sorted k-subset) or Bernoulli (mask) coordinates drawn from a generator."""

    def __init__(self, compressor: Compressor, d: int, world: int, dtype: torch.dtype,
                 device: torch.device, bucket: int):
        super().__init__(d, world, dtype, device)
        self.compressor = compressor
        self.randk = compressor.name == "randk"
        if self.randk:
            self.k = _bucket_k(compressor, d, bucket)
            self.scale = d / self.k                       # unbiasing factor d/k
        else:
            self.scale = 1.0 / compressor.p               # Bernoulli: 1/p

    def draw(self, key: BucketKey, rank: int) -> Tensor:
        """Kept coordinates (int64, sorted) for ``rank`` (SHARED: common to all ranks)."""
        gen = generator_for(key.seed, key.step, key.bucket, rank, self.device)
        if self.randk:
            return self.compressor.indices(self.d, gen, device=self.device)
        return self.compressor.mask(self.d, gen, self.device).nonzero().squeeze(1)


class SharedSparseCodec(_Sparse):
    """DCSGD with Rand-k/Bernoulli whose coordinates all ranks draw from one shared generator
    seeded by ``(seed, step, bucket)``: only the kept values travel and their sum is exact.

    With shared coordinates the agents' compressors are *not* independent (THEORY.md §1
    assumes they are): the mean ``(d/k)·(mean_i g_i)|_S`` carries compression variance
    ``ω‖mean g‖²``-like instead of ``(1/N)·mean_i ω‖g_i‖²``. Use :class:`IndependentSparseCodec`
    for the paper's setting.
    """

    collective = ALLREDUCE

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        self._index = index = self.draw(key, SHARED)
        payload = torch.empty(index.numel() + 1, dtype=self.dtype, device=self.device)
        torch.index_select(grad, 0, index, out=payload[:-1])
        payload[-1] = 1.0 if bad else 0.0
        return payload

    def own_message(self, payload: Tensor, key: BucketKey) -> Tensor:
        """``(d/k)·v_S`` (Rand-k) or ``v_S/p`` as ``v_S·(1/p)`` (Bernoulli) on the shared S."""
        own = self.own_buffer().zero_()
        return own.index_copy_(0, self._index, payload[:-1] * self.scale)

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        index = self._index
        values = combined[:-1].mul_(self.scale / self.world)
        out.zero_()
        out.index_copy_(0, index, values)
        return round(float(combined[-1]))


class IndependentSparseCodec(_Sparse):
    """DCSGD with Rand-k/Bernoulli drawn independently per rank, from ``(seed, step, bucket,
    rank)`` — THEORY.md §1's independent compressors. Every rank can redraw every other rank's
    coordinates, so still only kept values travel (padded to the largest count, for Bernoulli)
    and each rank scatters the N gathered rows.
    """

    collective = ALL_GATHER

    def _all_indices(self, key: BucketKey) -> list[Tensor]:
        cache = getattr(self, "_cache", None)
        if cache is None or cache[0] != (key.seed, key.step, key.bucket):
            cache = self._cache = ((key.seed, key.step, key.bucket),
                                   [self.draw(key, r) for r in range(self.world)])
        return cache[1]

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        indices = self._all_indices(key)
        width = max(int(i.numel()) for i in indices)
        payload = torch.zeros(width + 1, dtype=self.dtype, device=self.device)
        mine = indices[key.rank]
        torch.index_select(grad, 0, mine, out=payload[: mine.numel()])
        payload[-1] = 1.0 if bad else 0.0
        self.gather_buffer(width + 1, self.dtype)
        return payload

    def own_message(self, payload: Tensor, key: BucketKey) -> Tensor:
        """The scaled kept values of this rank's own coordinates."""
        mine = self._all_indices(key)[key.rank]
        own = self.own_buffer().zero_()
        return own.index_copy_(0, mine, payload[: mine.numel()] * self.scale)

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        out.zero_()
        for rank, index in enumerate(self._all_indices(key)):
            out.index_add_(0, index, combined[rank, : index.numel()])
        out.mul_(self.scale / self.world)
        return round(float(combined[:, -1].sum()))


class GatherCodec(Codec):
    """DCSGD with a quantiser (QSGD, natural), scaled sign, and EF21's Top-k: all-gather every
    rank's encoding (fixed size, ``wire_bits(d)/8`` bytes) plus a status byte; each rank
    decodes the N messages and averages. Rounding randomness is private to each rank:
    ``(seed, step, bucket, rank)``."""

    collective = ALL_GATHER

    def __init__(self, compressor: Compressor, d: int, world: int, dtype: torch.dtype,
                 device: torch.device):
        super().__init__(d, world, dtype, device)
        bits = compressor.wire_bits(d, dtype)
        if compressor.payload_dtype != torch.uint8 or bits % 8:
            raise ValueError(f"compressor {compressor.spec} has no fixed-size byte encoding; "
                             f"use randk, bernoulli, qsgd, natural, scaledsign or topk")
        self.compressor, self.m = compressor, bits // 8
        self._payload = torch.empty(self.m + 1, dtype=torch.uint8, device=device)
        self._scratch = torch.empty(d, dtype=dtype, device=device)
        self.gather_buffer(self.m + 1, torch.uint8)

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        gen = generator_for(key.seed, key.step, key.bucket, key.rank, self.device)
        message = self.compressor.encode(torch.zeros_like(grad) if bad else grad, gen)
        self._payload[: self.m].copy_(message.payload)
        self._payload[self.m] = 1 if bad else 0
        return self._payload

    def own_message(self, payload: Tensor, key: BucketKey) -> Tensor:
        """The decode of this rank's bytes, the operation :meth:`decode` applies to its row."""
        message = WireMessage(payload[: self.m].clone(), self.d, self.dtype)
        return self.compressor.decode(message, out=self.own_buffer())

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        for rank in range(self.world):
            message = WireMessage(combined[rank, : self.m].clone(), self.d, self.dtype)
            target = out if rank == 0 else self._scratch
            self.compressor.decode(message, out=target)
            if rank:
                out.add_(target)
        out.div_(self.world)
        return int(combined[:, self.m].sum())


def make_codec(method_name: str, compressor: Compressor, *, d: int, world: int,
               dtype: torch.dtype, device: torch.device, bucket: int, sign_wire: str,
               randomness: str, vote: bool = False,
               auto_wires: tuple[str, ...] = AUTO_SIGN_WIRES) -> Codec:
    """The codec of ``method_name`` for one bucket, chosen by ``compressor``: every method
    whose ranks send signs (``compressor`` sign: DSignSGD, Signum) takes the sign wires, with
    the server's majority vote in place of the mean when ``vote`` (THEORY.md §8); identity the
    mean allreduce; Rand-k/Bernoulli the sparse codecs; the rest (QSGD, natural, scaled sign,
    Top-k) the all-gather of their encodings (module docstring)."""
    if method_name == "dsignsgd" or compressor.name == "sign":
        from .sign_codecs import SignBitsCodec, SignDigitsCodec, SignInt8Codec, SignScatterCodec

        wire = (best_sign_wire(d, world, vote=vote, wires=auto_wires) if sign_wire == "auto"
                else sign_wire)
        if wire == "int8":
            return SignInt8Codec(d, world, dtype, device, vote=vote)
        if wire == "scatter":
            return SignScatterCodec(d, world, dtype, device, vote=vote)
        if wire == "digits":
            return SignDigitsCodec(d, world, dtype, device, vote=vote)
        return SignBitsCodec(d, world, dtype, device, vote=vote)
    if vote:
        raise ValueError(f"a majority vote needs signs on the wire, not {compressor.spec}")
    if method_name == "dsgd" or compressor.name == "identity":
        return MeanCodec(d, world, dtype, device)
    if compressor.name in ("randk", "bernoulli"):
        cls = SharedSparseCodec if randomness == "shared" else IndependentSparseCodec
        return cls(compressor, d, world, dtype, device, bucket)
    return GatherCodec(compressor, d, world, dtype, device)
