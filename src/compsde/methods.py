"""The three algorithms as "what each agent sends" plus "how the server combines" (THEORY.md §2).

Every method is a compressor applied by each agent followed by the server's mean over agents:

- DSGD:      m_i = g_i,            x ← x − η · mean_i m_i
- DCSGD:     m_i = C_i(g_i),       C_i unbiased with variance parameter ω_i
- DSignSGD:  m_i = sign(g_i),      the server averages the signs (not a majority vote)

Beyond the paper (THEORY.md §8 "Beyond the paper"), read by the layers through two capability
attributes, ``server`` ("mean" or "vote") and ``stateful`` (per-agent state across steps):

- ``dsignsgd:vote=majority``: the server sends v = sign(Σ_i sign(g_i)) (0 on a tie, even N)
- ``signum:beta=B[,vote=majority]``: m_i ← B m_i + (1 − B) g_i, then the mean (or vote) of
  sign(m_i)

Gradients arrive as tensors of shape (runs, agents, d); the update direction has shape (runs, d).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import compressors
from ._spec import parse_spec, reject_unknown, split_head
from .compressors import Compressor

METHOD_NAMES = ("dsgd", "dcsgd", "dsignsgd", "signum")
VOTES = ("majority",)


class Method:
    """A distributed method: per-agent compressors and the server's average of their messages.

    ``compressors`` holds one compressor shared by all agents, or one per agent (heterogeneous
    ω_i, THEORY.md §1). Agents with the same compressor object are processed in one batch.

    Capabilities the layers read instead of the name: ``server`` is ``"mean"`` (the server
    averages the messages) or ``"vote"`` (it sends the sign of their sum); ``stateful`` says
    each agent keeps a state across steps (:meth:`initial_state`, :meth:`step`).
    """

    server = "mean"
    stateful = False

    def __init__(self, name: str, compressor: Compressor | Sequence[Compressor]):
        self.name = name
        if isinstance(compressor, Compressor):
            self._per_agent: tuple[Compressor, ...] | None = None
            self.compressor = compressor
        else:
            per_agent = tuple(compressor)
            if not per_agent or not all(isinstance(c, Compressor) for c in per_agent):
                raise ValueError("compressor must be a Compressor or a non-empty sequence of "
                                 "Compressors (one per agent)")
            self._per_agent = per_agent
            self.compressor = per_agent[0]

    @property
    def spec(self) -> str:
        if self.name == "dcsgd":
            if self._per_agent is not None:
                return "dcsgd:[" + ";".join(c.spec for c in self._per_agent) + "]"
            return f"dcsgd:{self.compressor.spec}"
        return self.name

    @property
    def distinct_compressors(self) -> tuple[Compressor, ...]:
        """Every compressor in use (one, or one per agent)."""
        return self._per_agent if self._per_agent is not None else (self.compressor,)

    @property
    def unbiased(self) -> bool:
        return all(c.unbiased for c in self.distinct_compressors)

    @property
    def agents_fixed(self) -> int | None:
        """Number of agents the method was built for (per-agent compressors), else None."""
        return None if self._per_agent is None else len(self._per_agent)

    def compressors_for(self, agents: int) -> tuple[Compressor, ...]:
        """The compressor of each of ``agents`` agents; checks per-agent lists match."""
        if self._per_agent is None:
            return (self.compressor,) * agents
        if len(self._per_agent) != agents:
            raise ValueError(f"agents must equal the number of per-agent compressors "
                             f"({len(self._per_agent)}), got {agents}")
        return self._per_agent

    def omegas(self, agents: int, d: int) -> list[float] | None:
        """ω_i of every agent for dimension ``d``; None when a compressor is biased."""
        values = [c.omega(d) for c in self.compressors_for(agents)]
        return None if any(v is None for v in values) else [float(v) for v in values]

    def messages(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Each agent's message m_i = C_i(g_i); ``grads`` has shape (..., agents, d)."""
        agents = grads.shape[-2]
        if self._per_agent is None:
            return self.compressor(grads, generator)
        out = torch.empty_like(grads)
        groups: dict[int, list[int]] = {}
        for i, comp in enumerate(self.compressors_for(agents)):
            groups.setdefault(id(comp), []).append(i)
        for members in groups.values():
            comp = self._per_agent[members[0]]
            index = torch.tensor(members, device=grads.device)
            out.index_copy_(-2, index, comp(grads.index_select(-2, index), generator))
        return out

    def direction(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The server's update direction mean_i m_i, shape (..., d). Consumes ``grads``."""
        return self.messages(grads, generator).mean(dim=-2)

    def check_agents(self, agents: int) -> None:
        """Raise ValueError when the method is undefined for ``agents`` agents (no-op here)."""

    def initial_state(self, shape: tuple[int, ...], dtype: torch.dtype,
                      device: torch.device | str) -> Tensor | None:
        """The per-agent state of a ``stateful`` method for gradients of ``shape``, else None."""
        return None

    def step(self, grads: Tensor, state: Tensor | None,
             generator: torch.Generator | None = None) -> Tensor:
        """The direction of one step given the state (updated in place); consumes ``grads``."""
        return self.direction(grads, generator)

    def __repr__(self) -> str:
        return f"Method({self.spec!r})"


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


class Signum(Method):
    """Signum: m_i ← β m_i + (1 − β) g_i (m_i = 0 at the start), x ← x − η · mean_i sign(m_i),
    or the majority vote of the sign(m_i) with ``vote=True`` (THEORY.md §8)."""

    stateful = True

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

    def initial_state(self, shape: tuple[int, ...], dtype: torch.dtype,
                      device: torch.device | str) -> Tensor:
        """The momentum buffers m_i = 0, shape (..., agents, d): one gradient per agent."""
        return torch.zeros(shape, dtype=dtype, device=device)

    def step(self, grads: Tensor, state: Tensor | None,
             generator: torch.Generator | None = None) -> Tensor:
        if state is None or state.shape != grads.shape:
            raise ValueError(f"signum needs its momentum state of shape {tuple(grads.shape)} "
                             f"(Method.initial_state)")
        state.mul_(self.beta).add_(grads, alpha=1.0 - self.beta)
        if self.vote:
            return majority_vote(state)
        positive = (state >= 0).sum(dim=-2, dtype=state.dtype)
        return positive.mul_(2.0 / state.shape[-2]).sub_(1.0)

    def direction(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise ValueError(f"{self.spec} keeps a momentum per agent: use Method.step with the "
                         f"state from Method.initial_state, not direction")

    def messages(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise ValueError(f"{self.spec} sends the signs of its momenta, not of the gradients: "
                         f"use Method.step with the state from Method.initial_state")


class DSGD(Method):
    """DSGD: x ← x − η · mean_i g_i (the uncompressed baseline)."""

    def __init__(self) -> None:
        super().__init__("dsgd", compressors.make("identity"))

    def direction(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return grads.mean(dim=-2)


def DCSGD(compressor: str | Compressor | Sequence[Compressor]) -> Method:
    """DCSGD: x ← x − η · mean_i C_i(g_i) with unbiased compressors C_i (THEORY.md §2)."""
    if isinstance(compressor, str):
        compressor = compressors.make(compressor)
    method = Method("dcsgd", compressor)
    if not method.unbiased:
        raise ValueError("compressor of dcsgd must be unbiased (identity, randk, bernoulli, "
                         "qsgd, natural); use dsignsgd for sign compression")
    return method


def _vote(spec: str, options: dict[str, str]) -> bool:
    value = options.get("vote")
    if value is None:
        return False
    if value.lower() not in VOTES:
        raise ValueError(f"vote of {spec!r} must be one of {', '.join(VOTES)}, got {value!r}")
    return True


def _sign_family(name: str, spec: str) -> Method:
    """``dsignsgd:vote=majority`` or ``signum:beta=B[,vote=majority]`` (THEORY.md §8)."""
    _, options = parse_spec(spec, "method")
    if name == "dsignsgd":
        reject_unknown("method", name, options, {"vote"})
        return MajorityVote() if _vote(spec, options) else DSignSGD()
    reject_unknown("method", name, options, {"beta", "vote"})
    if "beta" not in options:
        raise ValueError(f"method 'signum' needs beta in [0, 1), e.g. 'signum:beta=0.9'; "
                         f"got {spec!r}")
    try:
        beta = float(options["beta"])
    except ValueError:
        raise ValueError(f"beta of signum must be a number in [0, 1), got "
                         f"{options['beta']!r}") from None
    return Signum(beta, vote=_vote(spec, options))


def make(spec: str) -> Method:
    """Build a method from ``"dsgd"``, ``"dsignsgd[:vote=majority]"``, ``"dcsgd:<compressor
    spec>"`` or ``"signum:beta=B[,vote=majority]"``."""
    name, rest = split_head(spec, "method")
    if name not in METHOD_NAMES:
        raise ValueError(f"method must be one of {', '.join(METHOD_NAMES)} "
                         f"(dcsgd as 'dcsgd:<compressor>', e.g. dcsgd:randk:ratio=0.1; "
                         f"signum as 'signum:beta=0.9'); got {spec!r}")
    if name == "signum" or (name == "dsignsgd" and rest):
        return _sign_family(name, spec)
    if name == "dcsgd":
        if not rest:
            raise ValueError("method 'dcsgd' needs a compressor, e.g. 'dcsgd:randk:ratio=0.1'")
        if rest.split("=")[0].strip().lower() == "omega":
            raise ValueError(f"method {spec!r} gives only ω, which the closed forms (compsde "
                             f"scale, theory) take but a simulation cannot run: it needs a "
                             f"compressor with that ω, e.g. dcsgd:bernoulli:p=P with ω = "
                             f"1/p − 1 at every d, or dcsgd:randk:k=K with ω = d/k − 1")
        return DCSGD(rest)
    if rest:
        raise ValueError(f"method {name!r} takes no options, got {spec!r}")
    return DSGD() if name == "dsgd" else DSignSGD()
