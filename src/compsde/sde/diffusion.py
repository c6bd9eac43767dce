"""Covariance matrices S(x) of an SDE's noise and their square-root factors (THEORY.md §3).

Every model has the form ``dX = b dt + √(η/N) · √S dW``. The integrator never needs the
symmetric square root of ``S``: any factor ``F`` with ``F Fᵀ = S`` gives increments ``F dW`` with
the same Gaussian law, hence the same weak solution. Each class here stores ``S`` in the cheapest
exact form and applies a factor to a batch of standard normal vectors:

- :class:`DiagonalCov`   ``S = Diag(D)``                       factor ``Diag(√D)``, O(d)
- :class:`DiagRankOneCov` ``S = Diag(D) + c v vᵀ``              O(d) factor (Rand-k, §1)
- :class:`FactorCov`     ``S = F Fᵀ`` for a given (d, r) factor, O(d r)

All tensors carry leading batch dimensions (runs); ``d`` is the last one.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Covariance:
    """A batch of covariance matrices ``S`` with a factor ``F`` (``F Fᵀ = S``)."""

    #: number of independent standard normals one sample of ``F z`` consumes
    noise_dim: int

    def apply(self, z: Tensor) -> Tensor:
        """``F z`` for ``z`` of shape (..., noise_dim); returns (..., d). May overwrite ``z``."""
        raise NotImplementedError

    def add_noise_(self, x: Tensor, z: Tensor, scale: float) -> Tensor:
        """``x += scale · F z`` in place (the integrator's update); may overwrite ``z``."""
        return x.add_(self.apply(z), alpha=scale)

    def dense(self) -> Tensor:
        """``S`` as a dense (..., d, d) tensor (for tests and small d)."""
        raise NotImplementedError

    def diagonal(self) -> Tensor:
        """``diag(S)``, shape (..., d)."""
        raise NotImplementedError

    def scaled(self, factor: float) -> Covariance:
        """The covariance ``factor · S`` (``factor ≥ 0``)."""
        raise NotImplementedError


class DiagonalCov(Covariance):
    """``S = Diag(D)``; negative round-off in ``D`` is clamped to 0 (skipped when the caller
    guarantees ``D ≥ 0`` with ``nonnegative=True``)."""

    def __init__(self, diag: Tensor, nonnegative: bool = False):
        self.diag = diag
        self.nonnegative = nonnegative
        self.noise_dim = diag.shape[-1]
        self._root: Tensor | None = None

    def root(self) -> Tensor:
        if self._root is None:
            self._root = (self.diag if self.nonnegative else self.diag.clamp_min(0.0)).sqrt()
        return self._root

    def add_noise_(self, x: Tensor, z: Tensor, scale: float) -> Tensor:
        if z.shape != x.shape:
            return super().add_noise_(x, z, scale)
        return x.addcmul_(z, self.root(), value=scale)

    def apply(self, z: Tensor) -> Tensor:
        return z.mul_(self.root()) if z.shape == self.diag.shape else z * self.root()

    def dense(self) -> Tensor:
        return torch.diag_embed(self.diag)

    def diagonal(self) -> Tensor:
        return self.diag

    def scaled(self, factor: float) -> DiagonalCov:
        return DiagonalCov(self.diag * factor)


class DiagRankOneCov(Covariance):
    """``S = Diag(D) + c · v vᵀ`` with a scalar ``c`` of fixed sign (per batch row allowed).

    Factor without any d×d matrix (O(d) per sample):

    - ``c ≥ 0``: ``F = [Diag(√D), √c · v]`` (one extra normal; ``noise_dim = d + 1``).
    - ``c < 0``: with ``w = v/√D`` (0 where ``D = 0``), ``S = √D (I + c w wᵀ) √D`` and
      ``I + c w wᵀ = (I + β ŵŵᵀ)²`` for ``β = √(1 + c‖w‖²) − 1``, so ``F = √D (I + β ŵŵᵀ)``.
      Positive semi-definiteness means ``1 + c‖w‖² ≥ 0``; round-off below 0 is clamped (the
      factor then describes the nearest PSD matrix of this form, exact otherwise).

    This is the Rand-k structure of THEORY.md §1: an O(d³) eigendecomposition is never needed.
    """

    def __init__(self, diag: Tensor, c: float | Tensor, v: Tensor):
        if diag.shape != v.shape:
            raise ValueError(f"diag and v must have the same shape, got {tuple(diag.shape)} "
                             f"and {tuple(v.shape)}")
        self.diag, self.v = diag, v
        c = torch.as_tensor(c, dtype=diag.dtype, device=diag.device)
        self.c = c.unsqueeze(-1) if c.ndim > 0 else c  # (..., 1) broadcasts against (..., d)
        signs = torch.sign(self.c)
        if bool((signs > 0).any()) and bool((signs < 0).any()):
            raise ValueError("c of a DiagRankOneCov must have one sign across the batch")
        self.positive = bool((self.c > 0).any())
        self.noise_dim = diag.shape[-1] + (1 if self.positive else 0)
        self._parts: tuple[Tensor, ...] | None = None

    def _prepare(self) -> tuple[Tensor, ...]:
        if self._parts is None:
            root = self.diag.clamp_min(0.0).sqrt()
            if self.positive:
                self._parts = (root, self.c.clamp_min(0.0).sqrt() * self.v)
            else:
                safe = torch.where(root > 0, root, torch.ones_like(root))
                w = torch.where(root > 0, self.v / safe, torch.zeros_like(root))
                norm2 = (w * w).sum(-1, keepdim=True)
                beta = (1.0 + self.c * norm2).clamp_min(0.0).sqrt() - 1.0
                scale = torch.where(norm2 > 0, beta / norm2.clamp_min(1e-300),
                                    torch.zeros_like(norm2))
                self._parts = (root, w, scale)  # F z = √D ⊙ (z + (β/‖w‖²) w (w·z))
        return self._parts

    def apply(self, z: Tensor) -> Tensor:
        parts = self._prepare()
        if self.positive:
            root, column = parts
            return root * z[..., :-1] + column * z[..., -1:]
        root, w, scale = parts
        proj = (w * z).sum(-1, keepdim=True).mul_(scale)
        return (z + proj * w).mul_(root)

    def dense(self) -> Tensor:
        outer = self.v.unsqueeze(-1) * self.v.unsqueeze(-2)
        c = self.c if self.c.ndim == 0 else self.c.unsqueeze(-1)
        return torch.diag_embed(self.diag) + c * outer

    def diagonal(self) -> Tensor:
        return self.diag + self.c * self.v * self.v

    def scaled(self, factor: float) -> DiagRankOneCov:
        c = self.c.squeeze(-1) if self.c.ndim > 0 else self.c
        return DiagRankOneCov(self.diag * factor, c * factor, self.v)


class FactorCov(Covariance):
    """``S = F Fᵀ`` from an explicit (..., d, r) factor (Monte-Carlo moments, full matrices)."""

    def __init__(self, factor: Tensor):
        if factor.ndim < 2:
            raise ValueError(f"factor must have shape (..., d, r), got {tuple(factor.shape)}")
        self.factor = factor
        self.noise_dim = factor.shape[-1]

    @classmethod
    def from_matrix(cls, matrix: Tensor) -> FactorCov:
        """Factor a symmetric PSD (..., d, d) matrix: Cholesky, else an eigendecomposition
        with negative eigenvalues (round-off) clamped to 0."""
        if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
            raise ValueError(f"matrix must be square (..., d, d), got {tuple(matrix.shape)}")
        sym = 0.5 * (matrix + matrix.transpose(-1, -2))
        chol, info = torch.linalg.cholesky_ex(sym)
        if bool((info == 0).all()):
            return cls(chol)
        values, vectors = torch.linalg.eigh(sym)
        return cls(vectors * values.clamp_min(0.0).sqrt().unsqueeze(-2))

    def apply(self, z: Tensor) -> Tensor:
        return (self.factor @ z.unsqueeze(-1)).squeeze(-1)

    def dense(self) -> Tensor:
        return self.factor @ self.factor.transpose(-1, -2)

    def diagonal(self) -> Tensor:
        return (self.factor * self.factor).sum(-1)

    def scaled(self, factor: float) -> FactorCov:
        return FactorCov(self.factor * float(factor) ** 0.5)
