"""The ω a compressor actually shows on real gradients, by Monte-Carlo (THEORY.md §1, §3).

An unbiased compressor promises ``E‖C(g) − g‖² ≤ ω‖g‖²``; the bound is tight for Rand-k and
Bernoulli but loose for QSGD and natural compression, whose variance depends on the shape of g.
DCSGD's SDE needs the trace of ``E Φ(g)`` over the gradient noise (§3), i.e.
``E‖C(g) − g‖² = ω_eff · E‖g‖²``, so we estimate the **ratio of means**

    ω̂ = Σ_m ‖C(g_m) − g_m‖² / Σ_m ‖g_m‖²

over the measured mini-batch gradients g_m, with the delta-method standard error
``se² = Var_m(a_m − ω̂ b_m) / (n · mean(b)²)`` (a = squared error, b = ‖g‖²). The Monte-Carlo
runs over the gradients; the compressor's own randomness is integrated out exactly wherever its
covariance has a closed form, ``E_ξ‖C(g) − g‖² = tr Φ(g) = Σ_j D_j + c‖g‖²`` for
``Φ = Diag(D) + c ggᵀ`` (a Rao–Blackwellised estimate: one compressor draw of a heavy-tailed g
is dominated by whether its largest entry is kept). Other compressors use one draw per gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import compressors
from ..compressors import Compressor


@dataclass(frozen=True)
class OmegaEstimate:
    """Measured ω̂ of one compressor, its standard error and the nominal ``omega(d)``."""

    spec: str
    omega: float
    se: float
    nominal: float | None
    draws: int
    unbiased: bool


@dataclass
class OmegaMeter:
    """Accumulates ``‖C(g) − g‖²`` and ``‖g‖²`` per gradient for each compressor."""

    specs: list[Compressor]
    generator: torch.Generator | None = None
    errors: dict[str, list[float]] = field(default_factory=dict)
    norms: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, specs: list[str | Compressor],
           generator: torch.Generator | None = None) -> OmegaMeter:
        built = [compressors.make(s) for s in specs]
        biased = [c.spec for c in built if not c.unbiased]
        if biased:
            raise ValueError(f"compressors must be unbiased to have an ω (DCSGD candidates); "
                             f"got {', '.join(biased)} (sign is assessed as DSignSGD)")
        return cls(built, generator, {c.spec: [] for c in built})

    def update(self, g: Tensor) -> None:
        """Compress the flat gradient ``g`` once with each compressor and record the errors."""
        g = g.detach().reshape(-1)
        self.norms.append(float(g.double().pow(2).sum()))
        for comp in self.specs:
            self.errors[comp.spec].append(self._error(comp, g))

    def _error(self, comp: Compressor, g: Tensor) -> float:
        try:
            diag, c = comp.covariance_diag_rank_one(g.double())
            return float(diag.sum() + c * g.double().pow(2).sum())
        except NotImplementedError:
            err = comp(g, self.generator) - g
            return float(err.double().pow(2).sum())

    def estimates(self, d: int) -> dict[str, OmegaEstimate]:
        """ω̂ and its standard error for each compressor (module docstring)."""
        b = torch.tensor(self.norms, dtype=torch.float64)
        n = b.numel()
        out = {}
        for comp in self.specs:
            a = torch.tensor(self.errors[comp.spec], dtype=torch.float64)
            if n == 0 or float(b.sum()) == 0.0:
                omega, se = math.nan, math.nan
            else:
                omega = float(a.sum() / b.sum())
                resid = a - omega * b
                se = float(resid.std() / (math.sqrt(n) * b.mean())) if n > 1 else math.inf
            nominal = comp.omega(d)
            out[comp.spec] = OmegaEstimate(comp.spec, omega, se, None if nominal is None
                                           else float(nominal), n, comp.unbiased)
        return out
