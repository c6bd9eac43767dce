"""Sign compressors: sign and scaled sign (biased, deterministic; THEORY.md §1-§2).

``sign(x_j) = +1 if x_j ≥ 0 else −1`` everywhere: the 1-bit wire has no zero, so sign(0) = +1
(NaN maps to −1). Scaled sign multiplies by ``mean_j |x_j|``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int
from .base import Compressor, WireMessage, register
from .bits import pack_signs, packed_nbytes, unpack_signs

__all__ = ["ScaledSign", "Sign"]


def _signs(x: Tensor) -> Tensor:
    """±1 with sign(0) = +1; on CPU through the wire's own pack/unpack (faster than where)."""
    if x.device.type == "cpu":
        return unpack_signs(pack_signs(x), x.numel(), x.dtype).view(x.shape)
    one = torch.ones((), dtype=x.dtype, device=x.device)
    return torch.where(x >= 0, one, -one)


@register
class Sign(Compressor):
    """``C(x)_j = sign(x_j)`` with sign(0) = +1 (biased; THEORY.md §1). Wire: 1 bit per entry,
    packed MSB first (32 signs → 4 bytes)."""

    name = "sign"
    unbiased = False

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return _signs(x)

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return pack_signs(x).to(x.device)

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        return unpack_signs(message.payload, message.d, message.dtype, out=out)

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        return 8 * packed_nbytes(check_int("d", d, minimum=1))


@register
class ScaledSign(Compressor):
    """``C(x) = (‖x‖₁/d) · sign(x)`` (biased; THEORY.md §1). The scale travels as float32 and
    ``__call__`` uses the same float32-rounded scale. Wire: 4-byte float32 scale + 1 bit per
    entry."""

    name = "scaledsign"
    unbiased = False

    @staticmethod
    def _scale(x: Tensor) -> Tensor:
        total = torch.linalg.vector_norm(x, ord=1, dim=-1, keepdim=True)
        return (total / x.shape[-1]).to(torch.float32)

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return _signs(x) * self._scale(x).to(x.dtype)

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        head = self._scale(x).view(torch.uint8).to(x.device)
        return torch.cat([head, pack_signs(x).to(x.device)])

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        payload = message.payload
        scale = payload[:4].clone().view(torch.float32).to(message.dtype)
        signs = unpack_signs(payload[4:], message.d, message.dtype, out=out)
        return signs.mul_(scale)

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        return 32 + 8 * packed_nbytes(check_int("d", d, minimum=1))

    def contraction(self, d: int) -> float:
        """α = 1/d: ‖C(x) − x‖² = ‖x‖² − ‖x‖₁²/d ≤ (1 − 1/d)‖x‖² (THEORY.md §8b)."""
        return 1.0 / check_int("d", d, minimum=1)
