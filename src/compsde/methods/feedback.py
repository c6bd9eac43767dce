"""Error feedback: EF21 and EF-signSGD (THEORY.md §8b "Error feedback").

- ``ef21:<compressor>`` (Richtárik et al. 2021): each agent keeps h_i (zero at the start),
  h_i ← h_i + C'(g_i − h_i), and the server steps x ← x − η · mean_i h_i. C' is the compressor
  itself when it is contractive (Top-k: α = k/d; scaled sign: α = 1/d) and C/(1 + ω) for an
  unbiased C (α = 1/(1 + ω)); an unscaled sign has no contraction factor and is refused.
- ``ef-signsgd`` (Karimireddy et al. 2019): each agent keeps e_i (zero at the start),
  p_i = g_i + e_i, Δ_i = (‖p_i‖₁/d) sign(p_i), e_i ← p_i − Δ_i, and the server steps along
  mean_i Δ_i. The error is kept in gradient units (the paper's p = ηg + e with e/η here), the
  same rule at a constant learning rate.

Both keep one (runs, agents, d) state in simulation; a rank in distributed training keeps its
h_i (EF21: and the server's mean_i h_i) or e_i, the memory :attr:`state_buffers` counts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import compressors
from ..compressors import Compressor
from .base import StatefulMethod


class EF21(StatefulMethod):
    """EF21: h_i ← h_i + C'(g_i − h_i), x ← x − η · mean_i h_i (THEORY.md §8b)."""

    feedback = "ef21"
    state_buffers = 2          # h_i, and every rank's copy of the server's mean_i h_i
    keeps = "a buffer h_i"
    sends = "compressed corrections of its buffer"

    def __init__(self, compressor: Compressor | str) -> None:
        if isinstance(compressor, str):
            compressor = compressors.make(compressor)
        if not compressor.contractive:
            raise ValueError(f"compressor of ef21 must be contractive (topk, scaledsign, or an "
                             f"unbiased one used as C/(1+ω): identity, randk, bernoulli, qsgd, "
                             f"natural); {compressor.spec} has no contraction factor")
        super().__init__("ef21", compressor)

    @property
    def spec(self) -> str:
        return f"ef21:{self.compressor.spec}"

    def divisor(self, d: int) -> float | None:
        """``1 + ω(d)`` that turns an unbiased C into ``C' = C/(1 + ω)`` on ``d`` entries; None
        when C is biased or ω = 0 (C' = C)."""
        if not self.compressor.unbiased:
            return None
        omega = float(self.compressor.omega(d))
        return 1.0 + omega if omega else None

    def contract(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``C'(x)`` along the last dimension: C(x), divided by 1 + ω when C is unbiased."""
        out = self.compressor(x, generator)
        divisor = self.divisor(x.shape[-1])
        return out if divisor is None else out.div_(divisor)

    def step(self, grads: Tensor, state: Tensor | None,
             generator: torch.Generator | None = None) -> Tensor:
        state = self.checked_state(grads, state)
        state.add_(self.contract(grads.sub_(state), generator))
        return state.mean(dim=-2)


class EFSignSGD(StatefulMethod):
    """EF-signSGD: p_i = g_i + e_i, Δ_i = (‖p_i‖₁/d) sign(p_i), e_i ← p_i − Δ_i,
    x ← x − η · mean_i Δ_i (THEORY.md §8b)."""

    feedback = "error"
    state_buffers = 1
    keeps = "an error buffer"
    sends = "scaled signs of its corrected gradient"

    def __init__(self) -> None:
        super().__init__("ef-signsgd", compressors.make("scaledsign"))

    def step(self, grads: Tensor, state: Tensor | None,
             generator: torch.Generator | None = None) -> Tensor:
        state = self.checked_state(grads, state)
        corrected = grads.add_(state)
        sent = self.compressor(corrected, generator)
        torch.sub(corrected, sent, out=state)
        return sent.mean(dim=-2)
