"""What travels: seeds shared across ranks, sign bits, and the byte count of each collective.

- :func:`derive_seed` / :func:`generator_for` turn ``(seed, step, bucket[, rank])`` into a
  ``torch.Generator``. Every rank computes the same generator for the same key, so Rand-k
  indices and Bernoulli masks drawn from it agree across ranks without being sent
  (docs/DESIGN.md, "Randomness"); a rank's private randomness (QSGD rounding, injected noise)
  adds its rank.
- Sign bits use the layout of ``compsde.compressors.bits.pack_signs`` (bit 1 = ``x ≥ 0``, most
  significant bit first, last byte zero-padded). :class:`SignPacker` writes them into a
  preallocated buffer; :class:`SignCounter` turns the N gathered bit vectors into
  ``mean_i sign(g_i) = 2·#{i: g_i ≥ 0}/N − 1`` (THEORY.md §2, DSignSGD's server mean) by
  gathering 8 coordinates at a time from a 256-entry table of int64 words and adding the words
  of all ranks: each byte of a word counts one coordinate, exact for N ≤ 255.
- :func:`allreduce_bytes` / :func:`all_gather_bytes` give the bytes a rank sends (and receives)
  in a bandwidth-optimal ring implementation of the collective: allreduce of ``S`` bytes moves
  ``2(N−1)/N · S`` each way, all-gather of ``m`` bytes per rank moves ``(N−1)·m`` each way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..compressors import native

_MASK64 = (1 << 64) - 1
_SEED_MAX = (1 << 63) - 1
SIGN_COUNT_MAX = 255        # ranks whose sign counts fit one byte of an int64 word


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixing the integers ``keys`` (SplitMix64 chain; order matters)."""
    state = 0x2545F4914F6CDD1D
    for key in keys:
        state = _splitmix64(state ^ (int(key) & _MASK64))
    return state & _SEED_MAX


SHARED = -1   # the "rank" key of randomness every rank draws identically


def generator_for(seed: int, step: int, bucket: int, rank: int = SHARED,
                  device: torch.device | str = "cpu") -> torch.Generator:
    """Generator for ``(seed, step, bucket, rank)``; ``rank=SHARED`` is common to all ranks."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, step, bucket, rank))
    return gen


def packed_nbytes(d: int) -> int:
    """Bytes of ``d`` sign bits: ``ceil(d/8)``."""
    return (d + 7) // 8


class SignPacker:
    """Pack ``x ≥ 0`` of a flat tensor into bytes (MSB first), reusing its buffers.

    With ``length > d`` the ``length − d`` coordinates after ``x`` count as zero bits (the
    padding of the sign reduce-scatter's equal shards).
    """

    def __init__(self, d: int, device: torch.device, length: int | None = None):
        self.d = d
        self.length = d if length is None else length
        self.device = device
        self._mask = np.zeros(self.length, dtype=np.bool_) if device.type == "cpu" else None
        self._weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8,
                                     device=device)

    def pack(self, x: Tensor, out: Tensor) -> Tensor:
        """Write the ``ceil(length/8)`` sign bytes of ``x`` into ``out`` (uint8), return it."""
        if native.pack_signs(x, out):          # zeroes the padding bytes too
            return out
        if self._mask is not None and x.dtype in (torch.float16, torch.float32, torch.float64):
            np.greater_equal(x.detach().numpy(), 0, out=self._mask[: self.d])
            out.copy_(torch.from_numpy(np.packbits(self._mask)).view(out.shape))
            return out
        bits = torch.zeros(packed_nbytes(self.length) * 8, dtype=torch.uint8, device=x.device)
        bits[: self.d] = x >= 0
        torch.sum(bits.view(-1, 8) * self._weights, dim=1, dtype=torch.uint8,
                  out=out.view(-1))
        return out


def _word_table(device: torch.device) -> Tensor:
    """Row ``b``: an int64 whose 8 bytes are the bits of ``b``, most significant first."""
    codes = torch.arange(256).unsqueeze(1)
    bits = ((codes >> torch.arange(7, -1, -1)) & 1).to(torch.uint8).contiguous()
    return bits.view(torch.int64).view(256).to(device)


def _pair_tables(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Tables for N = 2: ``digits[b] = Σ_e bit_e(b)·3^e`` (element ``e`` of a byte is its bit
    ``7 − e``), so ``digits[a] + digits[b]`` is the base-3 number of the 8 counts (no carries:
    each count is at most 2); ``values[r]`` holds the 8 means ``c_e · (2/2) − 1`` of ``r``
    (6561 × 8, small enough for the L2 cache)."""
    codes = torch.arange(256).unsqueeze(1)
    bits = (codes >> torch.arange(7, -1, -1)) & 1                   # (256, 8), element order
    powers = 3 ** torch.arange(8)
    digits = (bits * powers).sum(1).to(torch.int32)
    counts = (torch.arange(6561).unsqueeze(1) // powers) % 3         # (6561, 8)
    values = counts.to(dtype).mul_(2.0 / 2).sub_(1.0).contiguous()
    return digits.to(device), values.to(device)


class SignCounter:
    """``out = 2·#{i: bit_i = 1}/N − 1`` from ``(N, ceil(d/8))`` gathered sign bytes.

    The arithmetic is ``count · (2/N) − 1`` in ``out``'s dtype, the same operations as
    :meth:`compsde.methods.DSignSGD.direction`, so the two agree bitwise. For N = 2 the two
    ranks' bytes give a base-3 row of a 6561 × 8 table of the final values (one write of
    ``out``, no per-coordinate arithmetic).
    """

    def __init__(self, d: int, world: int, device: torch.device):
        self.d, self.world, self.device = d, world, device
        self._nbytes = nbytes = packed_nbytes(d)
        self._pairs: dict[torch.dtype, tuple[Tensor, Tensor]] = {}
        self._table: Tensor | None = None
        if world == 2:
            self._pair_bytes = torch.empty((2, nbytes), dtype=torch.int32, device=device)
            self._pair_rows = torch.empty((2, nbytes), dtype=torch.int32, device=device)

    def _word_buffers(self) -> None:
        """The word table and scratch of :meth:`counts_into` (allocated on first use)."""
        nbytes, device = self._nbytes, self.device
        group = min(self.world, SIGN_COUNT_MAX)
        self._table = _word_table(device)
        self._index = torch.empty(group * nbytes, dtype=torch.int32, device=device)
        self._words = torch.empty(group * nbytes, dtype=torch.int64, device=device)
        self._acc = torch.empty(nbytes, dtype=torch.int64, device=device)
        self._total = (torch.zeros(8 * nbytes, dtype=torch.int32, device=device)
                       if self.world > SIGN_COUNT_MAX else None)

    def _sum_group(self, gathered: Tensor) -> Tensor:
        rows, nbytes = gathered.shape
        index = self._index[: rows * nbytes]
        words = self._words[: rows * nbytes]
        index.view(rows, nbytes).copy_(gathered)        # strided rows: no temporary
        torch.index_select(self._table, 0, index, out=words)
        words = words.view(rows, nbytes)
        self._acc.copy_(words[0])
        for row in range(1, rows):
            self._acc.add_(words[row])
        return self._acc.view(torch.uint8)

    def counts_into(self, gathered: Tensor, out: Tensor) -> Tensor:
        """Write the number of ranks with a set bit, per coordinate, into ``out``."""
        if self._table is None:
            self._word_buffers()
        if self._total is None:
            return out.copy_(self._sum_group(gathered)[: self.d])
        self._total.zero_()
        for start in range(0, self.world, SIGN_COUNT_MAX):
            self._total.add_(self._sum_group(gathered[start:start + SIGN_COUNT_MAX]))
        return out.copy_(self._total[: self.d])

    def mean_signs(self, gathered: Tensor, out: Tensor) -> Tensor:
        """``mean_i sign(g_i)`` per coordinate into ``out`` (DSignSGD's server mean)."""
        if out.numel() == self.d and native.mean_from_rows(gathered, self.world, out):
            return out
        if self.world == 2:
            return self._mean_pair(gathered, out)
        return self.counts_into(gathered, out).mul_(2.0 / self.world).sub_(1.0)

    def _mean_pair(self, gathered: Tensor, out: Tensor) -> Tensor:
        tables = self._pairs.get(out.dtype)
        if tables is None:
            tables = self._pairs[out.dtype] = _pair_tables(out.dtype, out.device)
        digits, values = tables
        codes, rows = self._pair_bytes, self._pair_rows
        codes.copy_(gathered)
        torch.index_select(digits, 0, codes.view(-1), out=rows.view(-1))
        row = rows[0].add_(rows[1])
        full = self.d // 8
        if full:
            torch.index_select(values, 0, row[:full], out=out[: 8 * full].view(full, 8))
        if self.d % 8:
            out[8 * full:] = values[row[full].long(), : self.d % 8]
        return out


def allreduce_bytes(nbytes: int, world: int) -> float:
    """Bytes one rank sends (and receives) in a ring allreduce of ``nbytes``: 2(N−1)/N · S."""
    return 2.0 * (world - 1) * nbytes / world if world > 1 else 0.0


def all_gather_bytes(nbytes: int, world: int) -> float:
    """Bytes one rank sends (and receives) in a ring all-gather of ``nbytes`` per rank."""
    return float((world - 1) * nbytes)


def all_to_all_bytes(nbytes: int, world: int) -> float:
    """Bytes one rank sends (and receives) in an all-to-all of ``nbytes`` per destination."""
    return float((world - 1) * nbytes)


# -- DSignSGD's sign reduce-scatter ---------------------------------------------------------
SIGN_WIRE_CHOICES = ("bits", "int8", "scatter", "digits")
# what ``sign_wire="auto"`` chooses among; the HSDP state adds "digits" (its all-reduce is the
# one place the sign reduce-scatter's torch-decoded digits pay for themselves)
AUTO_SIGN_WIRES = ("bits", "int8", "scatter")


def count_bits(world: int) -> int:
    """Bits of a count of ``world`` signs, ``0 … N``: ``b = ⌈log₂(N + 1)⌉``."""
    return max(1, int(world).bit_length())


def sign_shard(d: int, world: int) -> int:
    """Coordinates of one rank's shard in the sign reduce-scatter: ``8·⌈d / 8N⌉`` (the bucket
    is zero-padded to ``N`` whole-byte shards)."""
    return 8 * ((d + 8 * world - 1) // (8 * world))


def digits_per_word(world: int) -> int:
    """Counts ``0 … N`` one int64 word holds as base-``(N+1)`` digits: the largest ``k`` with
    ``(N+1)^k ≤ 2^63`` (``log₂(N+1)`` bits a count instead of ``⌈log₂(N+1)⌉``)."""
    k = 1
    while (world + 1) ** (k + 1) <= 2**63:
        k += 1
    return k


def digits_nbytes(counts: int, world: int) -> int:
    """Bytes of ``counts`` counts of ``world`` signs packed :func:`digits_per_word` to a word."""
    return 8 * -(-counts // digits_per_word(world))


def vote_bits(world: int) -> int:
    """Bits of the server's majority vote per coordinate: 1 (±1) for odd N, 2 for even N,
    where a tie sends 0, a third value (THEORY.md §8)."""
    return 1 if world % 2 else 2


def sign_wire_traffic(wire: str, d: int, world: int, vote: bool = False) -> tuple[int, float]:
    """``(payload, moved)`` of DSignSGD's ``wire`` for one bucket of ``d`` coordinates on
    ``world`` ranks: the bytes a rank hands to its collectives and the bytes it sends (and
    receives) in their ring/pairwise implementations, one status byte per message included.

    - ``bits``: all-gather of ``⌈d/8⌉ + 1`` bytes, moved ``(N−1)(⌈d/8⌉ + 1)``;
    - ``int8``: uint8 allreduce of ``d + 1`` bytes, moved ``2(N−1)/N · (d + 1)``;
    - ``scatter``: all-to-all of ``N`` messages of ``s/8 + 1`` bytes (``s`` = :func:`sign_shard`)
      and the ``b·s/8`` count bytes to every other rank (an all-gather's bytes; the hook sends
      them as an all-to-all): moved ``(N−1)(s/8 + 1 + b·s/8)``, about
      ``(N−1)/N · (1 + b)·d/8`` (``b`` = :func:`count_bits`; with ``vote`` the shard's vote,
      ``b`` = :func:`vote_bits`). The bits and int8 wires carry the same bytes for the vote,
      which every rank computes from the gathered signs or the summed counts.
    """
    if wire == "bits":
        size = packed_nbytes(d) + 1
        return size, all_gather_bytes(size, world)
    if wire == "int8":
        return d + 1, allreduce_bytes(d + 1, world)
    if wire in ("scatter", "digits"):
        shard_bytes = sign_shard(d, world) // 8
        if wire == "digits":
            if vote:
                raise ValueError("sign_wire 'digits' carries counts; the majority vote sends "
                                 "1 or 2 bits per coordinate on sign_wire 'scatter'")
            counts = digits_nbytes(8 * shard_bytes, world)
        else:
            counts = (vote_bits(world) if vote else count_bits(world)) * shard_bytes
        message = shard_bytes + 1
        return (world * message + counts,
                all_to_all_bytes(message, world) + all_gather_bytes(counts, world))
    raise ValueError(f"sign_wire must be one of {', '.join(SIGN_WIRE_CHOICES)}, got {wire!r}")


def best_sign_wire(d: int, world: int, vote: bool = False,
                   wires: tuple[str, ...] = AUTO_SIGN_WIRES) -> str:
    """The wire of ``wires`` (:func:`sign_wire_traffic`) that moves the fewest bytes
    (``sign_wire="auto"``); ties go to the earlier (one-collective) wires. ``int8`` serves at
    most 255 ranks; ``digits`` carries no vote."""
    wires = tuple(w for w in wires if (w != "int8" or world <= SIGN_COUNT_MAX)
                  and (w != "digits" or not vote))
    return min(wires, key=lambda w: sign_wire_traffic(w, d, world, vote)[1])


class CountPlanes:
    """Counts ``0 … N`` of ``s`` coordinates (``s`` a multiple of 8) packed in ``b`` bit planes of
    ``s/8`` bytes each, most significant plane first, MSB-first bits (:func:`count_bits`):
    ``b·s/8`` bytes, the all-gathered message of the sign reduce-scatter.

    :meth:`unpack_into` turns the ``(N, b·s/8)`` gathered planes of all shards back into the
    counts of all ``N·s`` coordinates: each byte of a plane indexes a table of int64 words
    with one coordinate per byte, shifted by the plane's weight and summed (exact while a count
    fits a byte, N ≤ 255; larger N unpacks bit by bit into int32).
    """

    def __init__(self, shard: int, world: int, device: torch.device):
        if shard % 8:
            raise ValueError(f"shard must be a multiple of 8 coordinates, got {shard}")
        self.shard, self.world, self.bits = shard, world, count_bits(world)
        self.plane_bytes = shard // 8
        self.device = device
        self._shifts = np.arange(self.bits - 1, -1, -1, dtype=np.int32)
        self._table: Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.bits * self.plane_bytes

    def pack(self, counts: Tensor, out: Tensor) -> Tensor:
        """Write the planes of ``counts`` (``s`` integers) into ``out`` (``b·s/8`` uint8)."""
        values = counts.detach().cpu().numpy().astype(np.int32, copy=False)
        planes = ((values[None, :] >> self._shifts[:, None]) & 1).astype(np.bool_)
        out.copy_(torch.from_numpy(np.packbits(planes, axis=1).reshape(-1)))
        return out

    def count_into(self, rows: Tensor, out: Tensor) -> Tensor:
        """The planes of the per-coordinate number of set bits of ``(N, s/8)`` packed rows,
        into ``out`` (``b·s/8`` uint8): a bit-sliced ripple-carry sum, ``2·N·b`` bitwise
        passes over ``s/8`` bytes (no per-coordinate integers; a count never exceeds ``b``
        bits, so no carry is lost)."""
        bits, width = self.bits, self.plane_bytes
        planes = out.view(bits, width)
        if native.count_planes(rows, bits, planes):
            return out
        planes.zero_()
        carry = torch.empty(width, dtype=torch.uint8, device=rows.device)
        spare = torch.empty_like(carry)
        for row in range(rows.shape[0]):
            carry.copy_(rows[row])
            for weight in range(bits):                 # least significant plane first
                plane = planes[bits - 1 - weight]
                torch.bitwise_and(plane, carry, out=spare)
                plane.bitwise_xor_(carry)
                carry, spare = spare, carry
        return out

    def unpack_into(self, gathered: Tensor, out: Tensor | None = None) -> Tensor:
        """Counts of all ``N·s`` coordinates (shard-major) from ``(N, b·s/8)`` planes, into
        ``out`` (any dtype able to hold ``N``); returns ``out``. Without ``out`` (N ≤ 255) it
        returns a uint8 view of an internal buffer, valid until the next call."""
        rows = gathered.shape[0]
        planes = gathered.reshape(rows, self.bits, self.plane_bytes)
        if self.world > SIGN_COUNT_MAX:
            bits = np.unpackbits(planes.cpu().numpy(), axis=2).astype(np.int32)
            total = torch.from_numpy((bits << self._shifts[None, :, None]).sum(axis=1))
            return total.reshape(-1).to(self.device) if out is None else out.copy_(
                total.reshape(-1))
        if self._table is None:           # plane p's table: bytes of 0 or 2^(b−1−p)
            words = _word_table(self.device)
            self._table = [words << (self.bits - 1 - p) for p in range(self.bits)]
            self._index = torch.empty((rows, self.plane_bytes), dtype=torch.int32,
                                      device=self.device)
            self._words = torch.empty(rows * self.plane_bytes, dtype=torch.int64,
                                      device=self.device)
            self._acc = torch.empty(rows * self.plane_bytes, dtype=torch.int64,
                                    device=self.device)
        for plane in range(self.bits):
            self._index.copy_(planes[:, plane])
            target = self._acc if plane == 0 else self._words
            torch.index_select(self._table[plane], 0, self._index.view(-1), out=target)
            if plane:
                self._acc.add_(self._words)
        counts = self._acc.view(torch.uint8)
        return counts if out is None else out.copy_(counts)


def bucket_traffic(method: str, compressor, d: int, world: int, *, sign_wire: str = "auto",
                   randomness: str = "shared", value_bytes: int = 4) -> tuple[str, float, float]:
    """``(collective, payload, moved)`` of one bucket of ``d`` values: the sizes the codecs of
    :mod:`.codecs` account (status slots included), for the advisor's time model.

    ``method`` is ``dsgd``, ``dcsgd`` (``compressor``: identity, randk, bernoulli, qsgd,
    natural) or ``dsignsgd``. Bernoulli's payload is its expectation (``p·d`` kept values).
    """
    if method == "dsignsgd":
        wire = best_sign_wire(d, world) if sign_wire == "auto" else sign_wire
        payload, moved = sign_wire_traffic(wire, d, world)
        kind = {"bits": "all_gather", "int8": "allreduce", "scatter": "reduce_scatter"}[wire]
        return kind, float(payload), moved
    name = "identity" if method == "dsgd" or compressor is None else compressor.name
    if name == "identity":
        size = value_bytes * d
        return "allreduce", float(size), allreduce_bytes(size, world)
    if name in ("randk", "bernoulli"):
        kept = compressor.k_for(d) if name == "randk" else compressor.p * d
        size = value_bytes * (kept + 1)
        if randomness == "shared":
            return "allreduce", float(size), allreduce_bytes(size, world)
        return "all_gather", float(size), float((world - 1) * size)
    size = compressor.wire_bits(d, torch.float32) // 8 + 1
    return "all_gather", float(size), all_gather_bytes(size, world)
