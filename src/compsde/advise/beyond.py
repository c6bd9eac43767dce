"""The advisor's rows for the methods beyond the paper (THEORY.md §8): compared, not ranked.

For each: the lr it would run at, its stationary loss where THEORY.md derives one, the bytes one
rank sends per step on the hook's wire, the collective and its alpha-beta time, and the memory
of its per-rank state (``state_buffers`` gradient-sized float32 buffers, the cost that makes
error feedback a choice rather than a default).

- ``dsignsgd:vote=majority`` (N ≥ 2): run at ``η_v = η_s/c_N`` so that its Phase-3 rate
  ``c_N ℓλ/σ`` equals DSignSGD's at ``η_s``; level ``η_v S1 (1 − P_tie)/(4 ℓ c_N)``
  (:func:`compsde.theory.vote.vote_phase3_level`, §8a).
- ``signum:beta=0.9``, ``ef-signsgd``, ``scaledsign`` and ``ef21:topk``: no stationary loss is
  derived for a general model (§8a, §8b): the row says so, and ``advise --verify`` measures.

The recommendation stays among DSGD, DCSGD and DSignSGD, whose scaling rules are derived.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .. import compressors, methods
from ..theory.vote import vote_gain, vote_phase3_level, vote_tie
from . import network

BEYOND_SPECS = ("dsignsgd:vote=majority", "signum:beta=0.9", "scaledsign", "ef-signsgd",
                "ef21:topk:ratio=0.01")
_NOT_DERIVED = "not derived (THEORY.md §8b); measure with advise --verify or compsde simulate"


@dataclass
class OtherMethod:
    """One beyond-the-paper method's row (module docstring); None where a value does not exist."""

    spec: str
    lr: float
    stationary_loss: float | None
    loss_note: str
    bytes_per_step: int
    collective: str
    moved_bytes: float
    comm_seconds: float | None
    state_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wire(method: methods.Method, d: int, agents: int) -> tuple[str, float, float]:
    """``(collective, payload, moved)`` of the hook's wire for ``method`` on one bucket."""
    if method.sends_signs:
        return network.method_traffic("dsignsgd", None, d, agents)
    return network.method_traffic("dcsgd", compressors.make(method.compressor.spec), d, agents)


def other_methods(d: int, agents: int, lr_sign: float, scale_sum: float, nu: float | None,
                  bandwidth: float | None, latency: float) -> list[OtherMethod]:
    """The rows of :data:`BEYOND_SPECS` for ``d`` parameters on ``agents`` ranks; ``lr_sign``
    is DSignSGD's η_s, ``scale_sum`` the measured ``S1 = Σ_j σ_j``, ``nu`` the tail index."""
    rows = []
    for spec in BEYOND_SPECS:
        method = methods.make(spec)
        if method.server == "vote" and agents < 2:
            continue
        kind, payload, moved = _wire(method, d, agents)
        comm = None if bandwidth is None else network.traffic_seconds(kind, moved, agents,
                                                                     bandwidth, latency)
        lr, loss, note = lr_sign, None, _NOT_DERIVED
        if method.server == "vote":
            lr = lr_sign / vote_gain(agents)
            if scale_sum > 0:
                loss = vote_phase3_level(lr, [scale_sum], agents, nu)
                note = (f"η_v·Σσ(1 − P_tie)/(4ℓc_N), Phase 3, c_N = {vote_gain(agents):.3g}, "
                        f"P_tie = {vote_tie(agents):.3g}")
            else:
                note = "no noise measured"
        rows.append(OtherMethod(spec=method.spec, lr=lr, stationary_loss=loss, loss_note=note,
                                bytes_per_step=math.ceil(payload), collective=kind,
                                moved_bytes=moved, comm_seconds=comm,
                                state_bytes=4 * d * method.state_buffers))
    return rows


def other_table_lines(rows: list[OtherMethod]) -> list[str]:
    """The rows as aligned text, under a heading that says they are not ranked."""
    if not rows:
        return []

    def g(value: float | None) -> str:
        return "—" if value is None else f"{value:.3g}"

    header = ("method", "lr", "stationary loss", "bytes/step", "collective", "comm ms",
              "state bytes/rank")
    body = [(r.spec, g(r.lr), g(r.stationary_loss), f"{r.bytes_per_step:,}", r.collective,
             g(None if r.comm_seconds is None else 1e3 * r.comm_seconds), f"{r.state_bytes:,}")
            for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = ["", "beyond the paper (compared, not ranked; THEORY.md §8):", fmt.format(*header)]
    lines += [fmt.format(*b) for b in body]
    lines += [f"{r.spec}: {r.loss_note}" for r in rows]
    return lines
