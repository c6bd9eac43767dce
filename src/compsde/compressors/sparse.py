"""Sparsifiers: identity, Rand-k, Bernoulli-p and Top-k (THEORY.md §1)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .._checks import check_float, check_int
from .base import (
    Compressor,
    WireMessage,
    dtype_bits,
    format_number,
    into,
    kept_count,
    register,
    split_count_or_ratio,
    uniform,
)
from .sampling import sample_rows_without_replacement, sample_without_replacement

__all__ = ["Bernoulli", "CompressionWarning", "Identity", "RandK", "TopK"]


class CompressionWarning(UserWarning):
    """A compressor spec that does not mean at this dimension what it says (e.g. a ratio < 1/d)."""


_WARNED: set[tuple[str, float, int]] = set()


def warn_small_ratio(name: str, ratio: float, d: int, omega: float | None) -> None:
    """Warn once per (compressor, ratio, d) when ``ratio · d < 1``: k is rounded up to 1."""
    if ratio * d >= 1 or (name, ratio, d) in _WARNED:
        return
    _WARNED.add((name, ratio, d))
    wanted = f"ω = {1 / ratio - 1:.4g}" if omega is not None else "that share"
    effective = f" (ω = {omega:.4g})" if omega is not None else ""
    warnings.warn(f"{name}:ratio={format_number(ratio)} at d = {d} keeps k = 1 coordinate"
                  f"{effective}, not ratio·d = {ratio * d:.3g}; {wanted} needs d ≥ "
                  f"{int(-(-1 // ratio))} (or give k directly, e.g. {name}:k=1)",
                  CompressionWarning, stacklevel=3)


@register
class Identity(Compressor):
    """``C(x) = x``; ω = 0, Φ = 0 (THEORY.md §1). The wire carries the raw values."""

    name = "identity"
    unbiased = True
    payload_dtype = None

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x.clone()

    def omega(self, d: int) -> float:
        check_int("d", d, minimum=1)
        return 0.0

    def _diag_rank_one(self, g: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(g), g.new_zeros(())

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x.clone()

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        return into(out, message.payload.clone())

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        return check_int("d", d, minimum=1) * dtype_bits(dtype)


class _KOrRatio(Compressor):
    """Shared ``k``/``ratio`` handling of Rand-k and Top-k."""

    keys = ("k", "ratio")

    def __init__(self, k: Any = None, ratio: Any = None) -> None:
        self.k, self.ratio = split_count_or_ratio(self.name, k, ratio)

    def _options(self) -> dict[str, str]:
        if self.k is not None:
            return {"k": str(self.k)}
        return {"ratio": format_number(self.ratio)}

    def k_for(self, d: int) -> int:
        """Number of kept entries for dimension ``d``: ``k``, or ``max(1, round(ratio · d))``.

        A ``ratio`` below 1/d warns (:class:`CompressionWarning`) with the effective k and ω.
        """
        k = kept_count(d, self.k, self.ratio)
        if self.ratio is not None and self.ratio * d < 1:
            warn_small_ratio(self.name, self.ratio, d, d / k - 1.0 if self.unbiased else None)
        return k


@register
class RandK(_KOrRatio):
    """Rand-k: keep a uniform k-subset S, ``C(x) = (d/k) Σ_{j∈S} x_j e_j`` (THEORY.md §1).

    ω = d/k − 1 (tight); Φ = (d/k − 1) Diag(g)² − (d−k)/(k(d−1)) · Off(g gᵀ). The wire carries
    the k kept values *unscaled* (``x[indices]``, in ``x``'s dtype); both sides draw the indices
    from a shared seed, so :meth:`indices` with the same generator state reproduces them.
    """

    name = "randk"
    unbiased = True
    payload_dtype = None

    def scale(self, d: int) -> float:
        """The unbiasing factor ``d / k``."""
        return d / self.k_for(d)

    def indices(self, d: int, generator: torch.Generator | None = None, *,
                rows: int | None = None, device: torch.device | str = "cpu") -> Tensor:
        """Kept coordinates, sorted: shape ``(k,)``, or ``(rows, k)`` with independent rows.

        ``rows`` None or 1 uses :func:`sample_without_replacement` (what ``encode``/``decode``
        use); more rows use :func:`sample_rows_without_replacement`.
        """
        k = self.k_for(d)
        if rows is None:
            return sample_without_replacement(d, k, generator, device)
        if rows == 1:
            return sample_without_replacement(d, k, generator, device).unsqueeze(0)
        return sample_rows_without_replacement(rows, d, k, generator, device)

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        d = x.shape[-1]
        rows = x.numel() // d
        flat = x.reshape(rows, d)
        index = self.indices(d, generator, rows=rows, device=x.device)
        out = torch.zeros_like(flat)
        out.scatter_(1, index, flat.gather(1, index) * self.scale(d))
        return out.view(x.shape)

    def omega(self, d: int) -> float:
        return d / self.k_for(d) - 1.0

    def _diag_rank_one(self, g: Tensor) -> tuple[Tensor, Tensor]:
        d = g.shape[-1]
        k = self.k_for(d)
        c = -(d - k) / (k * (d - 1)) if d > 1 else 0.0
        return (d / k - 1.0 - c) * g * g, g.new_tensor(c)

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x[self.indices(x.shape[0], generator, device=x.device)]

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        d, payload = message.d, message.payload
        index = self.indices(d, generator, device=payload.device)
        if out is None:
            out = torch.zeros(d, dtype=message.dtype, device=payload.device)
        else:
            out.zero_()
        out[index] = payload * self.scale(d)
        return out

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        return self.k_for(d) * dtype_bits(dtype)


@register
class Bernoulli(Compressor):
    """Bernoulli-p: ``C(x)_j = x_j b_j / p``, ``b_j ~ Bern(p)`` i.i.d. (THEORY.md §1).

    ω = 1/p − 1 (tight); Φ = (1/p − 1) Diag(g)². The wire carries the kept values (unscaled);
    both sides redraw the mask from a shared seed. The payload size is random, so
    :meth:`wire_bits` gives its *expected* size ``round(p·d)·bits`` and ``WireMessage.bits``
    the actual one.
    """

    name = "bernoulli"
    unbiased = True
    keys = ("p",)
    payload_dtype = None

    def __init__(self, p: Any = None) -> None:
        if p is None:
            raise ValueError("compressor 'bernoulli' needs p, e.g. 'bernoulli:p=0.2'")
        self.p = check_float("p", p, low=0.0, high=1.0, low_open=True)

    def _options(self) -> dict[str, str]:
        return {"p": format_number(self.p)}

    def mask(self, shape: tuple[int, ...] | int, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> Tensor:
        """The keep mask ``b`` (True with probability p, from float64 uniforms)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return uniform(shape, generator, torch.device(device)) < self.p

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        keep = self.mask(x.shape, generator, x.device)
        out = torch.zeros_like(x)
        out[keep] = x[keep] / self.p
        return out

    def omega(self, d: int) -> float:
        check_int("d", d, minimum=1)
        return 1.0 / self.p - 1.0

    def _diag_rank_one(self, g: Tensor) -> tuple[Tensor, Tensor]:
        return (1.0 / self.p - 1.0) * g * g, g.new_zeros(())

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x[self.mask(x.shape, generator, x.device)]

    def _check_payload(self, message: WireMessage) -> None:
        payload = message.payload
        check_int("d", message.d, minimum=1)
        if (not isinstance(payload, Tensor) or payload.dtype != message.dtype
                or payload.dim() != 1 or payload.numel() > message.d):
            raise ValueError(f"payload must be a 1-D {message.dtype} tensor of at most "
                             f"d={message.d} kept values for 'bernoulli'")

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        payload = message.payload
        keep = self.mask(message.d, generator, payload.device)
        kept = int(keep.sum())
        if kept != payload.numel():
            raise ValueError(f"payload must hold the {kept} values kept by the mask of this "
                             f"generator state, got {payload.numel()}")
        if out is None:
            out = torch.zeros(message.d, dtype=message.dtype, device=payload.device)
        else:
            out.zero_()
        out[keep] = payload / self.p
        return out

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        """Expected payload bits ``round(p · d) · bits(dtype)`` (the actual count is random)."""
        return round(self.p * check_int("d", d, minimum=1)) * dtype_bits(dtype)


@register
class TopK(_KOrRatio):
    """Top-k: keep the k entries of largest magnitude (biased, deterministic; THEORY.md §1).

    Ties are broken by ``torch.topk``. Wire: k int32 indices, then the k values (bytes).
    """

    name = "topk"
    unbiased = False

    def _compress(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        index = x.abs().topk(self.k_for(x.shape[-1]), dim=-1, sorted=False).indices
        return torch.zeros_like(x).scatter_(-1, index, x.gather(-1, index))

    def _encode(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        index = x.abs().topk(self.k_for(x.shape[0]), sorted=False).indices.sort().values
        parts = [index.to(torch.int32).view(torch.uint8), x[index].contiguous().view(torch.uint8)]
        return torch.cat(parts)

    def _decode(self, message: WireMessage, generator: torch.Generator | None,
                out: Tensor | None) -> Tensor:
        k = self.k_for(message.d)
        payload = message.payload
        index = payload[: 4 * k].clone().view(torch.int32).long()
        values = payload[4 * k:].clone().view(message.dtype)
        if k and (int(index.min()) < 0 or int(index.max()) >= message.d):
            raise ValueError(f"payload holds indices outside [0, {message.d})")
        if out is None:
            out = torch.zeros(message.d, dtype=message.dtype, device=payload.device)
        else:
            out.zero_()
        out[index] = values
        return out

    def wire_bits(self, d: int, dtype: torch.dtype = torch.float32) -> int:
        return self.k_for(d) * (32 + dtype_bits(dtype))

    def contraction(self, d: int) -> float:
        """α = k/d: the d − k smallest entries carry at most (1 − k/d)‖x‖² (THEORY.md §8b)."""
        return self.k_for(check_int("d", d, minimum=1)) / d
