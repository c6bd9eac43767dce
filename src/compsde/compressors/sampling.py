"""Uniform sampling of k-subsets without replacement, fast for d >= 1e7 (no ``randperm``).

Draw random integers, keep first occurrences, top up until k are distinct; when k > d/2 the
complement is sampled instead. Rows of a batch get independent subsets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int
from .base import numpy_generator

__all__ = ["sample_rows_without_replacement", "sample_without_replacement"]

# Below this size a sampler just permutes range(d).
_SMALL_D = 1024
# Up to this size batched rows rank d uniform keys per row (measured faster than the
# draws + first-distinct path at d = 10; slower from d = 40 on).
_SMALL_ROW_D = 16

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

    For ``d ≤ 16`` a row is the positions of the k smallest of d i.i.d. uniform keys (k = 1:
    one uniform integer). Otherwise per row: about ``d·ln(d/(d−k))`` i.i.d. uniform integers
    (≈ k for k ≪ d); the first k distinct values in draw order form a uniform k-subset. A row
    with fewer than k distinct draws (rare) is redrawn by :func:`sample_without_replacement`;
    for ``k > d/2`` the complement is sampled. Cost O(rows · k log k), never O(rows · d) for
    d > 16 and k ≤ d/2.
    """
    rows = check_int("rows", rows, minimum=0)
    d = check_int("d", d, minimum=1)
    k = check_int("k", k, minimum=1, maximum=d)
    device = torch.device(device)
    if rows == 0 or k == d:
        return torch.arange(k, device=device).expand(rows, k).clone()
    if k == 1:
        return torch.randint(0, d, (rows, 1), generator=generator, device=device)
    if d <= _SMALL_ROW_D:  # the k smallest of d i.i.d. uniform keys: a uniform k-subset
        keys = torch.rand(rows, d, generator=generator, device=device)
        return keys.topk(k, dim=1, largest=False, sorted=False).indices.sort(dim=1).values
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
