"""The three algorithms as "what each agent sends" plus "how the server combines" (THEORY.md §2).

Every method is a compressor applied by each agent followed by the server's mean over agents:

- DSGD:      m_i = g_i,            x ← x − η · mean_i m_i
- DCSGD:     m_i = C_i(g_i),       C_i unbiased with variance parameter ω_i
- DSignSGD:  m_i = sign(g_i),      the server averages the signs (not a majority vote)

Gradients arrive as tensors of shape (runs, agents, d); the update direction has shape (runs, d).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import compressors
from ._spec import split_head
from .compressors import Compressor

METHOD_NAMES = ("dsgd", "dcsgd", "dsignsgd")


class Method:
    """A distributed method: per-agent compressors and the server's average of their messages.

    ``compressors`` holds one compressor shared by all agents, or one per agent (heterogeneous
    ω_i, THEORY.md §1). Agents with the same compressor object are processed in one batch.
    """

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


def make(spec: str) -> Method:
    """Build a method from ``"dsgd"``, ``"dsignsgd"`` or ``"dcsgd:<compressor spec>"``."""
    name, rest = split_head(spec, "method")
    if name not in METHOD_NAMES:
        raise ValueError(f"method must be one of {', '.join(METHOD_NAMES)} "
                         f"(dcsgd as 'dcsgd:<compressor>', e.g. dcsgd:randk:ratio=0.1); "
                         f"got {spec!r}")
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
