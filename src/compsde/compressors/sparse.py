"""Sparsifiers: identity, Rand-k, Bernoulli-p and Top-k (THEORY.md §1)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
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
    numpy_generator,
    register,
    split_count_or_ratio,
    uniform,
)

__all__ = ["Bernoulli", "Identity", "RandK", "TopK", "sample_rows_without_replacement",
           "sample_without_replacement"]

# Below this size a sampler just permutes range(d).
_SMALL_D = 1024


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


def _expected_draws(d: int, k: int) -> float:
    """Mean number of uniform draws from [0, d) until k < d distinct values (≈ d(H_d − H_{d−k}))."""
    return -d * math.log1p(-k / d)


def _draw_count(mean: float, k: int) -> int:
    """Draws to make: the mean plus about four standard deviations."""
    return int(mean + 4 * math.sqrt(mean - k + 1)) + 2


def _np_unique(values: np.ndarray) -> np.ndarray:
    values.sort()
    keep = np.empty(values.size, dtype=np.bool_)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _np_sample(d: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform k-subset of range(d), sorted (NumPy; see :func:`sample_without_replacement`)."""
    if d <= _SMALL_D:
        return np.sort(rng.permutation(d)[:k])
    if 2 * k > d:
        keep = np.ones(d, dtype=np.bool_)
        keep[_np_sample(d, d - k, rng)] = False
        return np.flatnonzero(keep)
    itype = np.int32 if d < 2**31 else np.int64
    mean = _expected_draws(d, k)
    chosen = _np_unique(rng.integers(0, d, _draw_count(mean, k), dtype=itype))
    while chosen.size < k:  # top up (rare): more draws, union
        missing = k - chosen.size
        extra = rng.integers(0, d, int(2 * missing * d / (d - chosen.size)) + 16, dtype=itype)
        chosen = _np_unique(np.concatenate([chosen, extra]))
    if chosen.size > k:  # drop a uniformly random subset of the surplus positions
        keep = np.ones(chosen.size, dtype=np.bool_)
        keep[_np_sample(chosen.size, chosen.size - k, rng)] = False
        chosen = chosen[keep]
    return chosen


def _torch_unique(values: Tensor) -> Tensor:
    values = values.sort().values
    keep = torch.ones_like(values, dtype=torch.bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _torch_sample(d: int, k: int, generator: torch.Generator | None,
                  device: torch.device) -> Tensor:
    """The algorithm of :func:`_np_sample` with torch ops on ``device``."""
    if d <= _SMALL_D:
        perm = torch.randperm(d, generator=generator, device=device)
        return perm[:k].sort().values
    if 2 * k > d:
        keep = torch.ones(d, dtype=torch.bool, device=device)
        keep[_torch_sample(d, d - k, generator, device)] = False
        return keep.nonzero().squeeze(1)

    def draw(count: int) -> Tensor:
        return torch.randint(0, d, (count,), generator=generator, device=device)

    mean = _expected_draws(d, k)
    chosen = _torch_unique(draw(_draw_count(mean, k)))
    while chosen.numel() < k:
        missing = k - chosen.numel()
        extra = draw(int(2 * missing * d / (d - chosen.numel())) + 16)
        chosen = _torch_unique(torch.cat([chosen, extra]))
    if chosen.numel() > k:
        keep = torch.ones(chosen.numel(), dtype=torch.bool, device=device)
        keep[_torch_sample(chosen.numel(), chosen.numel() - k, generator, device)] = False
        chosen = chosen[keep]
    return chosen


def sample_without_replacement(d: int, k: int, generator: torch.Generator | None = None,
                               device: torch.device | str = "cpu") -> Tensor:
    """A uniformly random k-subset of ``range(d)`` as a sorted int64 tensor, in O(k log k).

    Draws i.i.d. uniform integers until ``k`` distinct values appear, then drops a uniformly
    random subset of the surplus; the law of the result is invariant under permutations of
    ``range(d)``, hence uniform over k-subsets. For ``k > d/2`` it samples the complement.
    (``torch.randperm`` is far slower at large ``d``.)
    """
    d = check_int("d", d, minimum=1)
    k = check_int("k", k, minimum=1, maximum=d)
    device = torch.device(device)
    if device.type == "cpu":
        return torch.from_numpy(_np_sample(d, k, numpy_generator(generator)).astype(np.int64))
    return _torch_sample(d, k, generator, device)


def _np_first_distinct(draws: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a stream of draws, mark the first occurrence of each value, keeping the first
    k of them in stream order; returns (keep mask, number of distinct values per row)."""
    rows, m = draws.shape
    wide = int(draws.max(initial=0)) * m + m >= 2**31 or rows * m >= 2**31
    itype = np.int64 if wide else np.int32
    key = draws.astype(itype) * m + np.arange(m, dtype=itype)  # (value, position), unique
    key.sort(axis=1)
    value = key // m
    pos = key - value * m
    first = np.empty((rows, m), dtype=np.bool_)
    first[:, 0] = True
    np.not_equal(value[:, 1:], value[:, :-1], out=first[:, 1:])
    in_stream = np.zeros(rows * m, dtype=np.bool_)
    pos += (np.arange(rows, dtype=itype) * m)[:, None]
    in_stream[pos.ravel()] = first.ravel()
    in_stream = in_stream.reshape(rows, m)
    count = np.cumsum(in_stream, axis=1, dtype=itype)
    return in_stream & (count <= k), count[:, -1]


def _torch_first_distinct(draws: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """:func:`_np_first_distinct` with torch ops (any device)."""
    m = draws.shape[1]
    key = (draws * m + torch.arange(m, device=draws.device)).sort(dim=1).values
    value, pos = key.div(m, rounding_mode="floor"), key.remainder(m)
    first = torch.ones_like(key, dtype=torch.bool)
    first[:, 1:] = value[:, 1:] != value[:, :-1]
    in_stream = torch.zeros_like(first).scatter_(1, pos, first)
    count = in_stream.cumsum(1)
    return in_stream & (count <= k), count[:, -1]


def sample_rows_without_replacement(rows: int, d: int, k: int,
                                    generator: torch.Generator | None = None,
                                    device: torch.device | str = "cpu") -> Tensor:
    """``rows`` independent uniform k-subsets of ``range(d)``, shape ``(rows, k)``, rows sorted.

    Per row: about ``d·ln(d/(d−k))`` i.i.d. uniform integers (≈ k for k ≪ d); the first k
    distinct values in draw order form a uniform k-subset. A row with fewer than k distinct
    draws (rare) is redrawn by :func:`sample_without_replacement`; for ``k > d/2`` the
    complement is sampled. Cost O(rows · k log k), never O(rows · d) for k ≤ d/2.
    """
    rows = check_int("rows", rows, minimum=0)
    d = check_int("d", d, minimum=1)
    k = check_int("k", k, minimum=1, maximum=d)
    device = torch.device(device)
    if rows == 0 or k == d:
        return torch.arange(k, device=device).expand(rows, k).clone()
    if 2 * k > d:
        keep = torch.ones(rows, d, dtype=torch.bool, device=device)
        keep.scatter_(1, sample_rows_without_replacement(rows, d, d - k, generator, device),
                      False)
        return keep.nonzero()[:, 1].view(rows, k)
    shape = (rows, _draw_count(_expected_draws(d, k), k))
    if device.type == "cpu":
        itype = np.int32 if d < 2**31 else np.int64
        draws_np = numpy_generator(generator).integers(0, d, shape, dtype=itype)
        keep_np, distinct_np = _np_first_distinct(draws_np, k)
        draws, keep = torch.from_numpy(draws_np).long(), torch.from_numpy(keep_np)
        distinct = torch.from_numpy(distinct_np)
    else:
        draws = torch.randint(0, d, shape, generator=generator, device=device)
        keep, distinct = _torch_first_distinct(draws, k)
    short = (distinct < k).nonzero().squeeze(1).tolist()
    if not short:
        chosen = draws[keep].view(rows, k)
    else:
        chosen = torch.empty(rows, k, dtype=torch.int64, device=device)
        good = distinct >= k
        chosen[good] = draws[good][keep[good]].view(-1, k)
        for row in short:
            chosen[row] = sample_without_replacement(d, k, generator, device)
    if device.type == "cpu":
        chosen.numpy().sort(axis=1)
        return chosen
    return chosen.sort(dim=1).values


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
        """Number of kept entries for dimension ``d``: ``k``, or ``max(1, round(ratio · d))``."""
        return kept_count(d, self.k, self.ratio)


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
