"""Streaming per-coordinate moments of gradient samples (Welford / Chan–Pébay updates).

Each mini-batch gradient ``g ∈ R^d`` is one observation of ``∇f + Z`` (THEORY.md §1). We keep,
per coordinate, the count ``n``, the mean and the centred power sums
``M_p = Σ (g − mean)^p`` for ``p = 2, 3, 4``; a block of observations is folded in with the
pairwise merge of Chan et al. (1979) / Pébay (2008), which is exact and numerically stable:

``δ = mean_B − mean_A``, ``mean = mean_A + δ n_B/n``,
``M2 = M2_A + M2_B + δ² n_A n_B/n``, and the M3/M4 formulas in :meth:`Welford.merge`.

Accumulators are float64 whatever the input dtype. Variance is the unbiased ``M2/(n − 1)``;
excess kurtosis uses the estimator ``G2`` that is unbiased under normality.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int


class Welford:
    """Running mean, variance, skewness and kurtosis of ``d`` coordinates.

    ``update(x)`` takes one observation of shape ``(d,)`` or a block ``(n, d)``.
    """

    def __init__(self, d: int, *, device: str | torch.device = "cpu"):
        self.d = check_int("d", d, minimum=1)
        self.count = 0
        z = torch.zeros(self.d, dtype=torch.float64, device=device)
        self.mean, self.m2, self.m3, self.m4 = z, z.clone(), z.clone(), z.clone()

    def update(self, x: Tensor) -> Welford:
        """Fold in one observation ``(d,)`` or a block ``(n, d)``; returns ``self``."""
        x = x.detach().to(dtype=torch.float64, device=self.mean.device)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        if x.dim() != 2 or x.shape[1] != self.d:
            raise ValueError(f"x must have shape ({self.d},) or (n, {self.d}), got "
                             f"{tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return self
        mean = x.mean(dim=0)
        c = x - mean
        c2 = c * c
        other = Welford.__new__(Welford)
        other.d, other.count, other.mean = self.d, n, mean
        other.m2, other.m3, other.m4 = c2.sum(0), (c2 * c).sum(0), (c2 * c2).sum(0)
        return self.merge(other)

    def merge(self, other: Welford) -> Welford:
        """Combine with another accumulator over disjoint observations (Pébay 2008, eq. 3.1)."""
        if other.d != self.d:
            raise ValueError(f"other must have d={self.d}, got {other.d}")
        na, nb = self.count, other.count
        if nb == 0:
            return self
        if na == 0:
            self.count = nb
            self.mean, self.m2 = other.mean.clone(), other.m2.clone()
            self.m3, self.m4 = other.m3.clone(), other.m4.clone()
            return self
        n = na + nb
        delta = other.mean - self.mean
        d2 = delta * delta
        m4 = (self.m4 + other.m4 + d2 * d2 * (na * nb * (na * na - na * nb + nb * nb) / n**3)
              + 6.0 * d2 * (na * na * other.m2 + nb * nb * self.m2) / n**2
              + 4.0 * delta * (na * other.m3 - nb * self.m3) / n)
        m3 = (self.m3 + other.m3 + d2 * delta * (na * nb * (na - nb) / n**2)
              + 3.0 * delta * (na * other.m2 - nb * self.m2) / n)
        m2 = self.m2 + other.m2 + d2 * (na * nb / n)
        self.mean = self.mean + delta * (nb / n)
        self.m2, self.m3, self.m4, self.count = m2, m3, m4, n
        return self

    # -- summaries -------------------------------------------------------------------------
    def _need(self, minimum: int, what: str) -> None:
        if self.count < minimum:
            raise ValueError(f"{what} needs at least {minimum} observations, got {self.count}")

    @property
    def variance(self) -> Tensor:
        """Unbiased per-coordinate variance ``M2/(n − 1)``."""
        self._need(2, "variance")
        return self.m2 / (self.count - 1)

    @property
    def std(self) -> Tensor:
        return self.variance.sqrt()

    @property
    def mean_se(self) -> Tensor:
        """Standard error of the mean, ``√(var/n)``."""
        return (self.variance / self.count).sqrt()

    @property
    def skewness(self) -> Tensor:
        """Sample skewness ``g1 = √n M3 / M2^{3/2}`` (0 where the variance is 0)."""
        self._need(3, "skewness")
        m2 = self.m2
        out = (self.count ** 0.5) * self.m3 / m2.clamp_min(1e-300).pow(1.5)
        return torch.where(m2 > 0, out, torch.zeros_like(out))

    @property
    def excess_kurtosis(self) -> Tensor:
        """``G2 = (n−1)((n+1) g2 + 6)/((n−2)(n−3))``, ``g2 = n M4/M2² − 3``: unbiased for normal
        data; 0 where the variance is 0. Meaningless (unbounded) for Student-t with ν ≤ 4."""
        self._need(4, "excess_kurtosis")
        n = self.count
        m2 = self.m2
        g2 = n * self.m4 / (m2 * m2).clamp_min(1e-300) - 3.0
        out = (n - 1) * ((n + 1) * g2 + 6.0) / ((n - 2) * (n - 3))
        return torch.where(m2 > 0, out, torch.zeros_like(out))
