"""DSignSGD's codecs (THEORY.md §2: the server mean of the ranks' signs, not a majority vote).

Three wires with bitwise the same result (:func:`.wire.sign_wire_traffic` gives their sizes):
:class:`SignBitsCodec` (all-gather of packed signs), :class:`SignInt8Codec` (uint8 allreduce of
one byte per sign) and :class:`SignScatterCodec` (the sign reduce-scatter: all-to-all of packed
signs, per-shard counts, the counts' bit planes to every rank: an all-gather's bytes, sent as an
all-to-all). The hot loops run the compiled kernels of :mod:`compsde.compressors.native` where
they are available, the torch code otherwise (bitwise the same).

With ``vote=True`` each codec decodes the server's majority vote ``sign(2K − N)`` (0 on a tie)
from the count ``K`` of non-negative signs instead of the mean ``2K/N − 1`` (THEORY.md §8): the
bits and int8 wires compute it on every rank from what they received; the reduce-scatter's
owner of a shard sends its vote in :func:`.wire.vote_bits` bit planes instead of the counts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..compressors import native
from .codecs import ALL_GATHER, ALLREDUCE, SCATTER, BucketKey, Codec
from .wire import (
    CountPlanes,
    SignCounter,
    SignPacker,
    all_to_all_bytes,
    digits_per_word,
    packed_nbytes,
    sign_shard,
    sign_wire_traffic,
    vote_bits,
)


def vote_from_counts(counts: Tensor, world: int) -> Tensor:
    """``sign(2K − N)`` in place of the counts ``K`` (a float tensor): the majority vote, the
    same operations as :func:`compsde.methods.majority_vote`."""
    return counts.mul_(2.0).sub_(world).sign_()


class SignBitsCodec(Codec):
    """DSignSGD: all-gather ``ceil(d/8)`` sign bytes + a status byte per rank, then the server
    mean ``mean_i sign(g_i)`` (THEORY.md §2; not a majority vote)."""

    collective = ALL_GATHER

    def __init__(self, d: int, world: int, dtype: torch.dtype, device: torch.device,
                 vote: bool = False):
        super().__init__(d, world, dtype, device)
        self.vote = vote
        self.nbytes = packed_nbytes(d)
        self._packer = SignPacker(d, device)
        self._counter = SignCounter(d, world, device)
        self._payload = torch.empty(self.nbytes + 1, dtype=torch.uint8, device=device)
        self.gather_buffer(self.nbytes + 1, torch.uint8)

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        self._packer.pack(grad, self._payload[: self.nbytes])
        self._payload[self.nbytes] = 1 if bad else 0
        return self._payload

    def encode_checked(self, grad: Tensor, key: BucketKey) -> Tensor:
        finite = native.pack_signs_checked(grad.detach().view(-1), self._payload[: self.nbytes])
        if finite is None:
            return super().encode_checked(grad, key)
        self._payload[self.nbytes] = 0 if finite else 1
        return self._payload

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        if self.vote:
            vote_from_counts(self._counter.counts_into(combined[:, : self.nbytes], out),
                             self.world)
        else:
            self._counter.mean_signs(combined[:, : self.nbytes], out)
        return int(combined[:, self.nbytes].sum())


class SignInt8Codec(Codec):
    """DSignSGD for many agents: each rank sends ``1[g ≥ 0]`` as one byte per coordinate and
    a uint8 sum-allreduce counts the non-negative ranks (exact for N ≤ 255). Its traffic
    ``2(N−1)/N · d`` bytes does not grow with N, unlike the bit all-gather's ``(N−1)·d/8``:
    it is the cheaper wire from about N = 16 on."""

    collective = ALLREDUCE
    MAX_WORLD = 255

    def __init__(self, d: int, world: int, dtype: torch.dtype, device: torch.device,
                 vote: bool = False):
        self.vote = vote
        if world > self.MAX_WORLD:
            raise ValueError(f"sign_wire 'int8' counts ranks in one byte and supports at most "
                             f"{self.MAX_WORLD} ranks, got {world}; use sign_wire='bits'")
        super().__init__(d, world, dtype, device)
        self._payload = torch.empty(d + 1, dtype=torch.uint8, device=device)

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        head = self._payload[: self.d]
        if grad.device.type == "cpu" and grad.dtype in (torch.float16, torch.float32,
                                                         torch.float64):
            np.greater_equal(grad.detach().numpy(), 0, out=head.numpy().view(np.bool_))
        else:
            head.copy_(grad >= 0)
        self._payload[self.d] = 1 if bad else 0
        return self._payload

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        out.copy_(combined[: self.d])
        if self.vote:
            vote_from_counts(out, self.world)
        else:
            out.mul_(2.0 / self.world).sub_(1.0)
        return int(combined[self.d])


class SignScatterCodec(Codec):
    """DSignSGD's sign reduce-scatter (THEORY.md §2's server mean, computed shard by shard).

    The bucket is zero-padded to ``N`` shards of ``s`` coordinates (:func:`.wire.sign_shard`).
    Each rank packs its signs; an all-to-all hands rank ``r`` the ``s/8`` sign bytes (and the
    status byte) of shard ``r`` from every rank; rank ``r`` counts the non-negative signs of its
    shard and packs the counts in ``b = ⌈log₂(N + 1)⌉`` bit planes; an all-gather of those
    ``b·s/8`` bytes (sent as an all-to-all of the message replicated, :meth:`replicate`) gives
    every rank every count, decoded as ``count·(2/N) − 1`` — the same
    arithmetic as :class:`SignBitsCodec`, so the mean is bitwise the same.

    With ``shard`` given (FSDP2's layout, ``d = N·shard``), shard ``r`` is entries
    ``[r·shard, (r+1)·shard)`` and each shard's bits are padded to whole bytes on their own.
    """

    collective = SCATTER

    def __init__(self, d: int, world: int, dtype: torch.dtype, device: torch.device,
                 shard: int | None = None, vote: bool = False):
        super().__init__(d, world, dtype, device)
        self.vote = vote
        if shard is not None and shard * world != d:
            raise ValueError(f"shard {shard} × world {world} must equal d = {d}")
        self.rows_of_input = shard is not None
        self.shard = sign_shard(d, world) if shard is None else shard
        self.row = 8 * packed_nbytes(self.shard)            # padded shard, whole bytes
        self.shard_bytes = self.row // 8
        self._mask = (np.zeros((world, self.row), dtype=np.bool_) if device.type == "cpu"
                      else None)
        self._weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8,
                                     device=device)
        self._counter = SignCounter(self.row, world, device)
        # the vote's levels 0…L (−1, [0,] +1) pack like counts of L = vote_bits(N) "ranks"
        self._planes = CountPlanes(self.row, vote_bits(world) if vote else world, device)
        count_dtype = torch.uint8 if world < 256 else torch.int32
        self._shard_counts = torch.empty(self.row, dtype=count_dtype, device=device)
        self.send = torch.empty((world, self.shard_bytes + 1), dtype=torch.uint8,
                                device=device)
        self.received = torch.empty_like(self.send)
        self._message = torch.empty(self._planes.nbytes, dtype=torch.uint8, device=device)
        self._outgoing = torch.empty((world, self._planes.nbytes), dtype=torch.uint8,
                                     device=device)
        self.gather_buffer(self._planes.nbytes, torch.uint8)
        self._bad = 0

    def _pack(self, grad: Tensor) -> None:
        """Sign bits of ``grad`` (bit 1 = ``x ≥ 0``), shard ``r`` into row ``r`` of send."""
        if self._pack_native(grad) is not None:
            return
        if self._mask is not None and grad.dtype in (torch.float16, torch.float32,
                                                     torch.float64):
            x = grad.detach().numpy()
            if self.rows_of_input:
                np.greater_equal(x.reshape(self.world, self.shard), 0,
                                 out=self._mask[:, : self.shard])
            else:
                np.greater_equal(x, 0, out=self._mask.reshape(-1)[: self.d])
            packed = torch.from_numpy(np.packbits(self._mask, axis=1))
        else:
            bits = torch.zeros((self.world, self.row), dtype=torch.uint8, device=grad.device)
            if self.rows_of_input:
                bits[:, : self.shard] = grad.view(self.world, self.shard) >= 0
            else:
                bits.view(-1)[: self.d] = grad >= 0
            packed = (bits.view(self.world, -1, 8) * self._weights).sum(2, dtype=torch.uint8)
        self.send[:, : self.shard_bytes].copy_(packed)

    def _pack_native(self, grad: Tensor) -> bool | None:
        """:meth:`_pack` with the compiled kernel: whether every entry is finite, or None if
        the kernel is unavailable."""
        return native.pack_shards_checked(grad.detach().view(-1), self.shard,
                                          self.send[:, : self.shard_bytes])

    def encode_checked(self, grad: Tensor, key: BucketKey) -> Tensor:
        finite = self._pack_native(grad)
        if finite is None:
            return super().encode_checked(grad, key)
        self.send[:, self.shard_bytes] = 0 if finite else 1
        return self.send

    def _shards(self, out: Tensor):
        """``(rank, out's entries of shard rank)`` for the shards that hold coordinates."""
        for rank in range(self.world):
            start = rank * self.shard
            count = min(self.shard, out.numel() - start)
            if count <= 0:
                return
            yield rank, out[start:start + count]

    def encode(self, grad: Tensor, key: BucketKey, bad: bool) -> Tensor:
        """The ``(N, s/8 + 1)`` rows of the all-to-all: row ``r`` carries shard ``r``."""
        self._pack(grad)
        self.send[:, self.shard_bytes] = 1 if bad else 0
        return self.send

    def reduce(self, received: Tensor) -> Tensor:
        """This rank's all-gather message from the ``(N, s/8 + 1)`` rows it received."""
        self._bad = int(received[:, self.shard_bytes].sum())
        if self.vote:
            counts = self._counter.counts_into(received[:, : self.shard_bytes],
                                               self._shard_counts).to(torch.int32)
            return self._planes.pack(self._vote_levels(counts), self._message)
        return self._planes.count_into(received[:, : self.shard_bytes], self._message)

    def _vote_levels(self, counts: Tensor) -> Tensor:
        """The vote of counts ``K`` as a level: 1[2K > N] (odd N), 1[2K ≥ N] + 1[2K > N]
        (even N: 0, 1 on a tie, 2)."""
        twice = counts * 2
        above = (twice > self.world).to(torch.int32)
        return above if self.world % 2 else above + (twice >= self.world).to(torch.int32)

    def replicate(self, message: Tensor) -> Tensor:
        """``(N, b·s/8)`` rows, each ``message``: the input of the all-to-all that stands in for
        the all-gather of the counts (same bytes; every transfer at once, not a ring)."""
        self._outgoing.copy_(message.view(1, -1).expand_as(self._outgoing))
        return self._outgoing

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        if self.vote:
            levels = self._planes.unpack_into(combined)
            levels = levels.view(self.world, self.row)[:, : self.shard].reshape(-1)[: self.d]
            out.copy_(levels)
            if self.world % 2:
                out.mul_(2.0).sub_(1.0)
            else:
                out.sub_(1.0)
            return self._bad
        planes = combined.view(self.world, self._planes.bits, self._planes.plane_bytes)
        if all(native.mean_from_planes(planes[rank], self.world, part)
               for rank, part in self._shards(out[: self.d])):
            return self._bad
        counts = self._planes.unpack_into(combined)
        counts = counts.view(self.world, self.row)[:, : self.shard].reshape(-1)[: self.d]
        out.copy_(counts).mul_(2.0 / self.world).sub_(1.0)
        return self._bad

    def shard_mean(self, received: Tensor, out: Tensor) -> int:
        """FSDP2's half: this rank's shard of the mean of signs, from the received rows,
        into ``out`` (``shard`` entries); returns how many ranks reported non-finite values."""
        bad = int(received[:, self.shard_bytes].sum())
        if self.vote:
            self._counter.counts_into(received[:, : self.shard_bytes], self._shard_counts)
            vote_from_counts(out.copy_(self._shard_counts[: self.shard]), self.world)
            return bad
        if native.mean_from_rows(received[:, : self.shard_bytes], self.world, out):
            return bad
        self._counter.counts_into(received[:, : self.shard_bytes], self._shard_counts)
        out.copy_(self._shard_counts[: self.shard]).mul_(2.0 / self.world).sub_(1.0)
        return bad

    def traffic(self, payload: Tensor) -> tuple[int, float]:
        if self.rows_of_input:
            message = self.shard_bytes + 1
            return self.world * message, all_to_all_bytes(message, self.world)
        return sign_wire_traffic("scatter", self.d, self.world, self.vote)


class SignDigitsCodec(SignScatterCodec):
    """The sign reduce-scatter with its second stage's counts sent as base-``(N+1)`` digits,
    :func:`.wire.digits_per_word` of them to an int64 word: ``log₂(N+1)`` bits a count instead
    of the ``⌈log₂(N+1)⌉`` bit planes, fewer bytes where ``N + 1`` is far below a power of two
    (N = 4: 2.37 bits instead of 3, the all-reduce of 4 HSDP nodes at 0.052 of fp32's instead of
    1/16). Decoded in torch (integer division), so the same counts and the same
    ``count·(2/N) − 1`` as the other sign wires; not for the majority vote.
    """

    def __init__(self, d: int, world: int, dtype: torch.dtype, device: torch.device,
                 shard: int | None = None, vote: bool = False):
        if vote:
            raise ValueError("sign_wire 'digits' carries counts; the majority vote sends 1 or "
                             "2 bits per coordinate on sign_wire 'scatter'")
        super().__init__(d, world, dtype, device, shard=shard)
        self._per_word = digits_per_word(world)
        words = -(-self.row // self._per_word)
        self._powers = torch.tensor([(world + 1) ** j for j in range(self._per_word)],
                                    dtype=torch.int64, device=device)
        self._digits = torch.zeros(words * self._per_word, dtype=torch.int64, device=device)
        self._message = torch.empty(8 * words, dtype=torch.uint8, device=device)
        self._outgoing = torch.empty((world, 8 * words), dtype=torch.uint8, device=device)
        self.gather_buffer(8 * words, torch.uint8)

    def reduce(self, received: Tensor) -> Tensor:
        self._bad = int(received[:, self.shard_bytes].sum())
        counts = self._counter.counts_into(received[:, : self.shard_bytes], self._shard_counts)
        self._digits[: self.row].copy_(counts)
        words = (self._digits.view(-1, self._per_word) * self._powers).sum(1)
        self._message.view(torch.int64).copy_(words)
        return self._message

    def decode(self, combined: Tensor, key: BucketKey, out: Tensor) -> int:
        words = combined.contiguous().view(torch.int64).view(self.world, -1, 1)
        counts = torch.remainder(torch.div(words, self._powers, rounding_mode="floor"),
                                 self.world + 1)
        counts = counts.view(self.world, -1)[:, : self.row][:, : self.shard]
        out.copy_(counts.reshape(-1)[: self.d]).mul_(2.0 / self.world).sub_(1.0)
        return self._bad

    def traffic(self, payload: Tensor) -> tuple[int, float]:
        return sign_wire_traffic("digits", self.d, self.world)
