"""The batch law of measured gradient noise: scale of a batch mean ∝ B^{−γ} (THEORY.md §5a).

From ``M`` mini-batch gradients at batch B (rows, independent batches), the means of ``f``
consecutive rows are gradients at batch ``fB`` built from the same samples (``f`` = 1, 4, 16).
At each level the differences of disjoint pairs of means remove the unknown ∇f; for a scale
family ``E log|D| = log s_fB + c`` (finite for every tail index, Cauchy included), so the
mean of ``log|D_j|`` over the coordinates, one value per pair, has mean ``log s_fB + c``.
``γ̂`` is minus the weighted least-squares slope of those means against ``log(fB)``.

Standard error: the pairs of one level are independent, and the variance of a pair's mean of
``log|D|`` does not depend on the scale, so it is pooled over the levels; the levels share
samples (nested means), which the fit treats as independent — their common fluctuations
cancel in a slope, so the reported se is on the conservative side.

Gaussian (any finite variance, at large B): γ = ½. Tails of index α < 2: γ = 1 − 1/α
(generalised CLT; Cauchy: γ = 0, the mean of B Cauchy draws has the scale of one). The
exponent approaches its limit slowly near α = 2 (like B^{1−2/α} or B^{1−α/2}), so γ̂ at
batches 1–16 is the local exponent that the batch rules over that range should use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_int

FACTORS = (1, 4, 16)       # batch levels B, 4B, 16B
MIN_PAIRS = 2              # pairs of means at the largest level (one pair leaves no spread)
GAMMA_FLOOR = 0.05         # γ̂ at or below: no batch or agent average recovers a loss (§5a)
GAUSSIAN_GAMMA = 0.5


def samples_needed(factors: Sequence[int] = FACTORS, pairs: int = MIN_PAIRS) -> int:
    """Mini-batches needed for ``pairs`` pairs of means at the largest level."""
    return 2 * pairs * max(factors)


@dataclass(frozen=True)
class BatchLaw:
    """``scale(B) ∝ B^{−γ}`` fitted at ``batches`` (module docstring)."""

    gamma: float
    se: float
    batches: tuple[int, ...]
    log_scales: tuple[float, ...]
    log_scale_se: tuple[float, ...]
    pairs: tuple[int, ...]
    columns: int
    finite_variance: bool | None = None

    @property
    def alpha(self) -> float | None:
        """Tail index ``α = 1/(1 − γ̂)`` where γ̂ is confidently below ½ and the tail fit does
        not say the variance is finite, else None (a law with finite variance has γ = ½
        whatever its tail, and reaches it slowly, so α is not identified from γ̂)."""
        if self.finite_variance or self.gamma + 2 * self.se >= GAUSSIAN_GAMMA:
            return None
        return 1.0 / (1.0 - self.gamma) if self.gamma < 1 else math.inf

    @property
    def alpha_note(self) -> str:
        if self.alpha is not None:
            return f"α = 1/(1 − γ̂) = {self.alpha:.3g}"
        if self.finite_variance:
            return ("α not estimable from γ̂: the tail fit says the variance is finite (γ → ½ "
                    "for every α ≥ 2); γ̂ only")
        return ("α not estimable from γ̂: γ̂ is consistent with ½ (finite variance, "
                "any α ≥ 2); γ̂ only")

    @property
    def flat(self) -> bool:
        """γ̂ ≤ :data:`GAMMA_FLOOR`: averaging does not shrink the noise (no batch rule)."""
        return self.gamma <= GAMMA_FLOOR

    def text(self) -> str:
        return f"γ̂ = {self.gamma:.3g} ± {self.se:.2g}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alpha": self.alpha, "alpha_note": self.alpha_note,
                "flat": self.flat}


def fit_batch_law(samples: Tensor, batch: int = 1,
                  factors: Sequence[int] = FACTORS) -> BatchLaw:
    """Fit ``γ`` from ``samples`` (M × c, rows independent mini-batch gradients at ``batch``).

    ValueError when M is below :func:`samples_needed` or no column has spread at every level.
    """
    batch = check_int("batch", batch, minimum=1)
    factors = tuple(sorted({check_int("factors", f, minimum=1) for f in factors}))
    if len(factors) < 2:
        raise ValueError(f"factors must hold at least two batch levels, got {factors}")
    x = torch.as_tensor(samples, dtype=torch.float64)
    if x.dim() != 2:
        raise ValueError(f"samples must be a matrix (mini-batches × coordinates), got shape "
                         f"{tuple(x.shape)}")
    need = samples_needed(factors)
    if x.shape[0] < need:
        raise ValueError(f"samples must be at least {need} mini-batches to measure the batch "
                         f"law at {', '.join(f'{f}B' if f > 1 else 'B' for f in factors)} "
                         f"({MIN_PAIRS} pairs of {max(factors)}B means), got {x.shape[0]}")
    diffs = []
    for f in factors:
        groups = x.shape[0] // f
        means = x[:groups * f].reshape(groups, f, -1).mean(1)
        pairs = groups // 2
        diffs.append((means[0:2 * pairs:2] - means[1:2 * pairs:2]).abs())
    usable = torch.stack([((d > 0) & torch.isfinite(d)).all(0) for d in diffs]).all(0)
    columns = int(usable.sum())
    if columns == 0:
        raise ValueError("samples have no coordinate whose batch means differ at every level "
                         "(point masses): the batch law cannot be measured")
    per_pair = [d[:, usable].log().mean(1) for d in diffs]
    means = torch.tensor([float(p.mean()) for p in per_pair], dtype=torch.float64)
    counts = [p.numel() for p in per_pair]
    dof = sum(n - 1 for n in counts)
    pooled = sum(float(((p - p.mean()) ** 2).sum()) for p in per_pair) / dof
    se = torch.tensor([math.sqrt(pooled / n) for n in counts], dtype=torch.float64)
    logb = torch.tensor([math.log(batch * f) for f in factors], dtype=torch.float64)
    w = 1.0 / se.clamp_min(1e-300) ** 2
    xbar = float((w * logb).sum() / w.sum())
    sxx = float((w * (logb - xbar) ** 2).sum())
    slope = float((w * (logb - xbar) * means).sum()) / sxx
    return BatchLaw(gamma=-slope, se=math.sqrt(1.0 / sxx),
                    batches=tuple(batch * f for f in factors),
                    log_scales=tuple(float(v) for v in means),
                    log_scale_se=tuple(float(v) for v in se), pairs=tuple(counts),
                    columns=columns)


def batch_factor(loss_factor: float, gamma: float, power: int = 2) -> float | None:
    """The batch (or agent) multiplier that divides a loss ∝ scale^power by ``loss_factor``:
    ``loss_factor^{1/(power·γ)}`` (§5a); None when ``γ ≤`` :data:`GAMMA_FLOOR` (impossible)."""
    if gamma <= GAMMA_FLOOR:
        return None
    return loss_factor ** (1.0 / (power * gamma))
