"""Unbiased random quantizers: QSGD (random dithering) and natural compression (THEORY.md §1)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int
from .base import Compressor, WireMessage, into, register, uniform
from .bits import pack_codes, packed_nbytes, unpack_codes

__all__ = ["QSGD", "Natural"]

_MAX_LEVELS = 2**24  # levels stay exact integers in float32


@register
class QSGD(Compressor):
    """QSGD with s levels: ``C(x)_j = ‖x‖ sign(x_j) ξ_j / s`` (THEORY.md §1).

    ``ξ_j`` rounds ``r_j = s|x_j|/‖x‖`` to ⌊r_j⌋ or ⌊r_j⌋+1 with P(up) = r_j − ⌊r_j⌋, so
    ``E C(x) = x``; Φ is diagonal with variances ``(‖x‖/s)² p_j(1 − p_j)``, ``p_j = r_j − ⌊r_j⌋``;
    ω = min(d/s², √d/s) is a bound, not tight. The norm travels as float32, so ``‖x‖`` is the
    float32 value at or above the exact norm, used identically by ``__call__`` and ``decode``.
    Wire: 4-byte float32 norm, then per entry 1 sign bit + ceil(log2(s+1)) level bits, packed.
    """

    name = "qsgd"
    unbiased = True
    keys = ("levels",)

    def __init__(self, levels: Any = None) -> None:
        if levels is None:
            raise ValueError("compressor 'qsgd' needs levels, e.g. 'qsgd:levels=4'")
        self.levels = check_int("levels", levels, minimum=1, maximum=_MAX_LEVELS)
        self.level_bits = self.levels.bit_length()  # = ceil(log2(levels + 1))

    def _options(self) -> dict[str, str]:
        return {"levels": str(self.levels)}

    def _norm_and_ratio(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per row: the float32-representable norm ``n ≥ ‖x‖`` (in x's dtype), and ``s|x|/n``."""
        exact = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float64)
        norm32 = exact.to(torch.float32)
        norm32 = torch.where(norm32.double() < exact,
                             torch.nextafter(norm32, norm32.new_tensor(math.inf)), norm32)
        norm = norm32.to(x.dtype)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        ratio = (x.abs() / safe * self.levels).clamp_(max=self.levels)
        return norm, ratio

    def _quantize(self, x: Tensor, generator: torch.Generator | None
                  ) -> tuple[Tensor, Tensor, Tensor]:
        norm, ratio = self._norm_and_ratio(x)
        low = ratio.floor()
        up = uniform(tuple(x.shape), generator, x.device) < (ratio - low)
        level = low.to(torch.int64) + up
        return norm, (x < 0) & (level > 0), level

    def _reconstruct(self, norm: Tensor, negative: Tensor, level: Tensor) -> Tensor:
        value = norm * (level.to(norm.dtype) / self.levels)
        return torch.where(negative, -value, value)

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return self._reconstruct(*self._quantize(x, generator))

    def omega(self, d: int) -> float:
        d = check_int("d", d, minimum=1)
        s = self.levels
        return min(d / s**2, math.sqrt(d) / s)

    def _diag_rank_one(self, g: Tensor) -> tuple[Tensor, Tensor]:
        norm, ratio = self._norm_and_ratio(g)
        frac = ratio - ratio.floor()
        return (norm / self.levels) ** 2 * frac * (1 - frac), g.new_zeros(())

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        norm, negative, level = self._quantize(x, generator)
        codes = negative.to(torch.int64) << self.level_bits | level
        head = norm.to(torch.float32).reshape(1).view(torch.uint8)
        return torch.cat([head, pack_codes(codes, self.level_bits + 1).to(x.device)])

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        payload = message.payload
        norm = payload[:4].clone().view(torch.float32).to(message.dtype)
        codes = unpack_codes(payload[4:], message.d, self.level_bits + 1)
        level = codes & ((1 << self.level_bits) - 1)
        negative = (codes >> self.level_bits).bool()
        if int(level.max()) > self.levels:
            raise ValueError(f"payload holds levels above levels={self.levels}")
        return into(out, self._reconstruct(norm, negative, level))

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        d = check_int("d", d, minimum=1)
        return 32 + 8 * packed_nbytes(d, self.level_bits + 1)


# Exponent field width of each floating dtype (natural compression's code width).
_EXPONENT_BITS = {torch.float16: 5, torch.bfloat16: 8, torch.float32: 8, torch.float64: 11}


def _pow2(exponent: Tensor) -> Tensor:
    """Exact ``2.0 ** exponent`` in float64 from the bit pattern (1024 gives inf)."""
    biased = (exponent.to(torch.int64) + 1023).clamp_(1, 2047)
    return (biased << 52).view(torch.float64)


def _exponent_bits(dtype: torch.dtype) -> int:
    if dtype not in _EXPONENT_BITS:
        raise ValueError(f"dtype must be one of float16, bfloat16, float32, float64; got {dtype}")
    return _EXPONENT_BITS[dtype]


@register
class Natural(Compressor):
    """Natural compression: ``|x_j|`` rounded at random to a neighbouring power of two,
    unbiased (THEORY.md §1).

    For ``2^a ≤ |x_j| < 2^{a+1}``, P(up) = (|x_j| − 2^a)/2^a; per-entry variance
    ``(2^{a+1} − |x_j|)(|x_j| − 2^a)``; Φ diagonal; ω = 1/8, tight, for entries that are zero or
    in the normal range of the dtype. Zero stays zero. Entries below the smallest normal
    ``2^emin`` round between 0 and ``2^emin`` (variance ``(2^emin − |x|)|x|``, outside ω = 1/8),
    and entries ≥ the largest binade may round up to ``2^(emax+1)``, which overflows to ±inf.
    Wire: per entry 1 sign bit + the dtype's exponent-field width (8 for float32) bits; code 0
    is zero, code c ≥ 1 is ``2^(c − bias)``.
    """

    name = "natural"
    unbiased = True

    def _bounds(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """|x| (float64), its power-of-two bracket [low, high), the low code and the bias."""
        width = _exponent_bits(x.dtype)
        bias = 2 ** (width - 1) - 1
        emin = 1 - bias
        magnitude = x.abs().to(torch.float64)
        _, exponent = torch.frexp(magnitude)  # magnitude = m · 2^exponent, m ∈ [0.5, 1)
        floor_log2 = exponent.to(torch.int64) - 1
        tiny = floor_log2 < emin
        low = torch.where(tiny, 0.0, _pow2(floor_log2))
        high = torch.where(tiny, 2.0**emin, 2 * low)
        low_code = torch.where(tiny, 0, floor_log2 + bias)
        return magnitude, low, high, low_code, bias

    def _round(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        magnitude, low, high, low_code, _ = self._bounds(x)
        up = uniform(tuple(x.shape), generator, x.device) < (magnitude - low) / (high - low)
        code = torch.where(magnitude == 0, 0, low_code + up)
        return code, x < 0

    def _reconstruct(self, code: Tensor, negative: Tensor, dtype: torch.dtype) -> Tensor:
        bias = 2 ** (_exponent_bits(dtype) - 1) - 1
        value = torch.where(code == 0, 0.0, _pow2(code - bias))
        return torch.where(negative & (code > 0), -value, value).to(dtype)

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        code, negative = self._round(x, generator)
        return self._reconstruct(code, negative, x.dtype)

    def omega(self, d: int) -> float:
        check_int("d", d, minimum=1)
        return 0.125

    def _diag_rank_one(self, g: Tensor) -> tuple[Tensor, Tensor]:
        magnitude, low, high, _, _ = self._bounds(g)
        variance = (high - magnitude) * (magnitude - low)
        return torch.where(magnitude == 0, 0.0, variance).to(g.dtype), g.new_zeros(())

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        width = _exponent_bits(x.dtype)
        code, negative = self._round(x, generator)
        codes = (negative & (code > 0)).to(torch.int64) << width | code
        return pack_codes(codes, width + 1).to(x.device)

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        width = _exponent_bits(message.dtype)
        codes = unpack_codes(message.payload, message.d, width + 1)
        code = codes & ((1 << width) - 1)
        return into(out, self._reconstruct(code, (codes >> width).bool(), message.dtype))

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        d = check_int("d", d, minimum=1)
        return 8 * packed_nbytes(d, _exponent_bits(dtype) + 1)
