"""The sign methods: DSignSGD (the server mean of signs), its majority vote, Signum and scaled
sign (THEORY.md §2 and §8 "Beyond the paper").

- DSignSGD:  m_i = sign(g_i), the server averages the signs (not a majority vote)
- ``dsignsgd:vote=majority``: the server sends v = sign(Σ_i sign(g_i)) (0 on a tie, even N)
- ``signum:beta=B[,vote=majority]``: m_i ← B m_i + (1 − B) g_i, then the mean (or vote) of
  sign(m_i)
- ``scaledsign``: m_i = (‖g_i‖₁/d) sign(g_i), the server averages (no error feedback)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import compressors
from .base import Method, StatefulMethod


class DSignSGD(Method):
    """DSignSGD: x ← x − η · mean_i sign(g_i), with sign(0) = +1 as on the 1-bit wire."""

    def __init__(self) -> None:
        super().__init__("dsignsgd", compressors.make("sign"))

    def direction(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # mean of ±1 = 2 · (fraction of non-negative entries) − 1; avoids materialising the signs.
        positive = (grads >= 0).sum(dim=-2, dtype=grads.dtype)
        return positive.mul_(2.0 / grads.shape[-2]).sub_(1.0)


def majority_vote(grads: Tensor) -> Tensor:
    """``sign(Σ_i sign(g_i))`` over the agents' dimension −2, with sign(0) = +1 per agent and
    0 on a tie (even N): ``sign(2K − N)``, K the count of g_i ≥ 0 (THEORY.md §8)."""
    positive = (grads >= 0).sum(dim=-2, dtype=grads.dtype)
    return positive.mul_(2.0).sub_(grads.shape[-2]).sign_()


def _check_vote_agents(spec: str, agents: int) -> None:
    if agents < 2:
        raise ValueError(f"agents must be at least 2 for the majority vote of {spec} (with one "
                         f"agent the vote is that agent's sign: use dsignsgd), got {agents}")


class MajorityVote(Method):
    """DSignSGD with majority vote: x ← x − η · sign(Σ_i sign(g_i)), 0 on a tie (THEORY.md §8)."""

    server = "vote"

    def __init__(self) -> None:
        super().__init__("dsignsgd-vote", compressors.make("sign"))

    @property
    def spec(self) -> str:
        return "dsignsgd:vote=majority"

    def check_agents(self, agents: int) -> None:
        _check_vote_agents(self.spec, agents)

    def direction(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return majority_vote(grads)


class Signum(StatefulMethod):
    """Signum: m_i ← β m_i + (1 − β) g_i (m_i = 0 at the start), x ← x − η · mean_i sign(m_i),
    or the majority vote of the sign(m_i) with ``vote=True`` (THEORY.md §8)."""

    state_buffers = 1
    keeps = "a momentum"
    sends = "the signs of its momenta"

    def __init__(self, beta: float, vote: bool = False) -> None:
        beta = float(beta)
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta of signum must be in [0, 1) (the momentum's weight on the "
                             f"past; beta = 1 never moves), got {beta:g}")
        super().__init__("signum", compressors.make("sign"))
        self.beta = beta
        self.vote = bool(vote)
        self.server = "vote" if self.vote else "mean"

    @property
    def spec(self) -> str:
        return f"signum:beta={self.beta!r}" + (",vote=majority" if self.vote else "")

    def check_agents(self, agents: int) -> None:
        if self.vote:
            _check_vote_agents(self.spec, agents)

    def step(self, grads: Tensor, state: Tensor | None,
             generator: torch.Generator | None = None) -> Tensor:
        state = self.checked_state(grads, state)
        state.mul_(self.beta).add_(grads, alpha=1.0 - self.beta)
        if self.vote:
            return majority_vote(state)
        positive = (state >= 0).sum(dim=-2, dtype=state.dtype)
        return positive.mul_(2.0 / state.shape[-2]).sub_(1.0)


class ScaledSignSGD(Method):
    """Scaled sign SGD: x ← x − η · mean_i (‖g_i‖₁/d) sign(g_i), without error feedback
    (biased; the baseline EF-signSGD corrects, THEORY.md §8b)."""

    def __init__(self) -> None:
        super().__init__("scaledsign", compressors.make("scaledsign"))
