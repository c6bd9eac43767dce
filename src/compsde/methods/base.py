"""The method interface and the paper's DSGD and DCSGD (THEORY.md §2).

Every method is a compressor applied by each agent followed by the server's combination of the
messages; gradients arrive as tensors of shape (runs, agents, d), the update direction has shape
(runs, d). The layers read a method's capabilities (``server``, ``stateful``, ``feedback``,
``state_buffers``, ``sends_signs``, ``unbiased``) instead of its name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .. import compressors
from ..compressors import Compressor


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
    # "error" (EF-signSGD: the rank sends C(g + e), keeps e ← g + e − C(g + e)) or "ef21"
    # (the rank sends C(g − h), keeps h ← h + C(g − h); the server steps along mean_i h_i)
    feedback: str | None = None
    # gradient-sized buffers one rank keeps in distributed training (THEORY.md §8a memory)
    state_buffers = 0

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
    def sends_signs(self) -> bool:
        """Whether the agents send unscaled signs (the sign wires: DSignSGD, its vote, Signum)."""
        return self.compressor.name == "sign"

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


class StatefulMethod(Method):
    """A method whose agents keep a gradient-sized buffer across steps (zeros at the start):
    only :meth:`step` with the state of :meth:`initial_state` is defined. ``keeps`` names the
    buffer and ``sends`` what travels, for the refusals of ``direction`` and ``messages``."""

    stateful = True
    keeps = "a buffer"
    sends = "a function of its buffer"

    def initial_state(self, shape: tuple[int, ...], dtype: torch.dtype,
                      device: torch.device | str) -> Tensor:
        """The per-agent buffers, zeros of shape (..., agents, d)."""
        return torch.zeros(shape, dtype=dtype, device=device)

    def checked_state(self, grads: Tensor, state: Tensor | None) -> Tensor:
        """``state``, after checking it has the shape of ``grads``."""
        if state is None or state.shape != grads.shape:
            raise ValueError(f"{self.spec} keeps {self.keeps} per agent: pass the state of "
                             f"shape {tuple(grads.shape)} from Method.initial_state")
        return state

    def direction(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise ValueError(f"{self.spec} keeps {self.keeps} per agent: use Method.step with the "
                         f"state from Method.initial_state, not direction")

    def messages(self, grads: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise ValueError(f"{self.spec} sends {self.sends}, not of the gradients: use "
                         f"Method.step with the state from Method.initial_state")


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


