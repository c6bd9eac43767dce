"""Scaling rules in closed form (THEORY.md §5).

Conventions: **(T)** equal SDE time ``t = kη`` (the iteration count scales by ``η/η̃``);
**(K)** equal iteration count. Every rule says which one it uses and what it matches.
Leading-order levels (per coordinate of ``f = ½Lx²``, SDE, §4):
DSGD ``ησ²/(4NB)``; DCSGD ``η(1+ω)σ²/(4NB(1 − ηLω/(2N)))``; DSignSGD ``ησ/(4ℓN√B)``.

- DSGD: depends on ``η/(BN)`` only: (T) ``(κη, κB, N)`` or ``(κη, B, κN)``; (K) ``(η, κB, N/κ)``.
- DCSGD recovering DSGD(η, B, N) (``F = mean((1+ω_i)σ_i²)/mean(σ_i²)``, ``= 1+ω`` when
  homogeneous): batch ``B̃ = FB/(1 − ηLω̄/(2N))``; agents ``Ñ = FN + ηLω̄/2``; learning rate
  ``η̃ = η/(F + ηLω̄/(2N))`` (loss matched; under (T) run ``η/η̃`` times more steps, under (K)
  the per-iteration speed is not matched). First order: ``B`` or ``N`` times ``F``.
- DSignSGD keeping DSignSGD(η, B, N): (T) ``(κη, B, κN)``; (K) ``(κη, B/κ², κ²N)``.
- Noise scaled by α: ``B → α²B`` (every method).

Batch law (§5a): a batch or agent average divides the noise scale by ``B^γ`` (``γ = ½`` with
finite variance, ``1 − 1/α`` for tails of index α < 2). With ``gamma``, every factor ``x`` that
multiplies B (or, for DSGD/DCSGD, N) becomes ``x^{1/(2γ)}``; DSignSGD's mean of signs is
bounded, so its agents keep ``1/N``; ``γ ≤ GAMMA_FLOOR``: no batch recovers (ValueError).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .._checks import check_choice, check_float, check_positive

CONVENTIONS = ("T", "K")
GAMMA_FLOOR = 0.05   # = compsde.diagnose.batch_law.GAMMA_FLOOR: averaging does not pay below


def check_gamma(gamma: float, knob: str = "batch") -> float:
    """``gamma`` in (GAMMA_FLOOR, 1]; ValueError saying that no ``knob`` recovers the loss."""
    gamma = check_float("gamma", gamma, low=0.0, high=1.0)
    if gamma <= GAMMA_FLOOR:
        raise ValueError(f"gamma must be > {GAMMA_FLOOR} for a {knob} rule: with γ = {gamma:.3g} "
                         f"the noise scale does not fall with the {knob} (B^{{−γ}}), no {knob} "
                         f"recovers the loss (THEORY.md §5a); lower the lr instead")
    return gamma


@dataclass(frozen=True)
class Hyper:
    """A configuration of the knobs a rule changes (continuous; round batch/agents to use)."""

    lr: float
    batch: float
    agents: float


@dataclass(frozen=True)
class Rule:
    """A closed-form rule: the recommended ``config``, the convention, what it matches."""

    name: str
    convention: str
    config: Hyper
    steps_factor: float
    matches: dict[str, bool] = field(default_factory=dict)
    formula: str = ""


def _convention(value: str) -> str:
    return check_choice("convention", str(value).upper(), CONVENTIONS)


def heterogeneity_factor(omegas: Sequence[float], sigmas: Sequence[float]) -> float:
    """``F = mean_i((1+ω_i)σ_i²) / mean_i(σ_i²)`` — DCSGD's noise multiplier (§5)."""
    w = np.asarray(omegas, dtype=float)
    s2 = np.asarray(sigmas, dtype=float) ** 2
    w, s2 = np.broadcast_arrays(w, s2)
    return float(((1 + w) * s2).mean() / s2.mean())


def dsgd_rules(lr: float, batch: float, agents: float, kappa: float,
               convention: str = "T") -> list[Rule]:
    """DSGD(η, B, N) ≡ DSGD(κη, κB, N) ≡ DSGD(κη, B, κN) under (T); (η, κB, N/κ) under (K)."""
    kappa = check_positive("kappa", kappa)
    convention = _convention(convention)
    both = {"stationary_loss": True, "speed_time": True, "speed_steps": convention == "K"}
    if convention == "T":
        return [Rule("dsgd-lr-batch", "T", Hyper(kappa * lr, kappa * batch, agents), 1 / kappa,
                     both, "(κη, κB, N): the SDE depends on η/(BN) only"),
                Rule("dsgd-lr-agents", "T", Hyper(kappa * lr, batch, kappa * agents), 1 / kappa,
                     both, "(κη, B, κN): the SDE depends on η/(BN) only")]
    return [Rule("dsgd-batch-agents", "K", Hyper(lr, kappa * batch, agents / kappa), 1.0, both,
                 "(η, κB, N/κ): keeps η (speed per step) and BN (noise)")]


def dcsgd_from_dsgd(lr: float, batch: float, agents: float, omega: float, *, via: str,
                    L: float | None = None, factor: float | None = None,
                    convention: str = "T", first_order: bool = False,
                    gamma: float = 0.5) -> Rule:
    """DCSGD with ω̄ recovering DSGD(η, B, N) through ``via`` = batch | agents | lr (§5, §5a).

    ``factor`` is F (defaults to ``1+ω``; pass :func:`heterogeneity_factor` for heterogeneous
    agents). ``L`` is needed unless ``first_order`` (then ``ηLω/(2N)`` is dropped). ``gamma``
    is the batch law's exponent: ``B̃ = B (F/(1 − ηLω/(2N)))^{1/(2γ)}``; the agents solve
    ``F Ñ^{−2γ}/(1 − ηLω/(2Ñ)) = N^{−2γ}`` (closed form at γ = ½); the lr rule has no γ.
    """
    via = check_choice("via", via, ("batch", "agents", "lr"))
    half = gamma == 0.5
    if via != "lr":
        gamma = check_gamma(gamma, via)
    convention = _convention(convention)
    omega = check_float("omega", omega, low=0.0)
    f = 1 + omega if factor is None else check_positive("factor", factor)
    if first_order:
        corr = 0.0
    else:
        if L is None:
            raise ValueError("L is required for the DCSGD rules (they contain ηLω/(2N)); pass an "
                             "estimate of the largest Hessian eigenvalue, or use first_order")
        corr = lr * check_positive("L", L) * omega / (2 * agents)
    speed = abs(corr) < 0.05
    if via == "batch":
        if corr >= 1:
            raise ValueError(f"lr: ηLω/(2N) = {corr:.3g} ≥ 1, DCSGD is unstable at this lr, no "
                             f"batch recovers the loss; lower the lr")
        cfg = Hyper(lr, batch * (f / (1 - corr)) ** (1 / (2 * gamma)), agents)
        text = "B̃ = (1+ω)B/(1 − ηLω/(2N))" if not first_order else "B̃ = (1+ω)B"
        if not half:
            text = text.replace("B̃ = ", "B̃/B = (").replace("B/", "/", 1).replace(
                "(1+ω)B", "(1+ω)") + ")^{1/(2γ)}"
        return Rule("dcsgd-batch", convention, cfg, 1.0,
                    {"stationary_loss": True, "speed_time": speed, "speed_steps": speed}, text)
    if via == "agents":
        extra = 0.0 if first_order else lr * L * omega / 2  # type: ignore[operator]
        if half:
            cfg = Hyper(lr, batch, f * agents + extra)
            text = "Ñ = (1+ω)N + ηLω/2" if not first_order else "Ñ = (1+ω)N"
        else:
            cfg = Hyper(lr, batch, _agents_for(f, agents, extra, gamma))
            text = ("(1+ω)Ñ^{−2γ}/(1 − ηLω/(2Ñ)) = N^{−2γ}" if not first_order
                    else "Ñ = N(1+ω)^{1/(2γ)}")
        return Rule("dcsgd-agents", convention, cfg, 1.0,
                    {"stationary_loss": True, "speed_time": True, "speed_steps": True}, text)
    new_lr = lr / (f + corr)
    text = "η̃ = η/(1 + ω + ηLω/(2N))" if not first_order else "η̃ = η/(1+ω)"
    return Rule("dcsgd-lr", convention, Hyper(new_lr, batch, agents),
                lr / new_lr if convention == "T" else 1.0,
                {"stationary_loss": True, "speed_time": True, "speed_steps": False}, text)


def _agents_for(f: float, agents: float, extra: float, gamma: float) -> float:
    """Ñ solving ``f Ñ^{−2γ}/(1 − extra/Ñ) = N^{−2γ}`` (``extra = ηLω/2``), by bisection on
    log Ñ; the left side falls in Ñ once ``Ñ > extra``."""
    def excess(n: float) -> float:
        return math.log(f) - 2 * gamma * math.log(n) - math.log1p(-extra / n) \
            + 2 * gamma * math.log(agents)

    lo = max(agents, extra * (1 + 1e-12), 1e-300)
    hi = max(lo, agents) * 2
    while excess(hi) > 0:
        hi *= 2
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def dsignsgd_rules(lr: float, batch: float, agents: float, kappa: float,
                   convention: str = "T", gamma: float = 0.5) -> Rule:
    """DSignSGD(η, B, N) ≡ (κη, B, κN) under (T) and (κη, B/κ^{1/γ}, κ²N) under (K) (§5, §5a;
    γ = ½: ``B/κ²``): level ∝ ησB^{−γ}/N, speed per step ∝ ηB^{γ}."""
    kappa = check_positive("kappa", kappa)
    convention = _convention(convention)
    matches = {"stationary_loss": True, "speed_time": convention == "T",
               "speed_steps": convention == "K"}
    if convention == "T":
        return Rule("dsignsgd-T", "T", Hyper(kappa * lr, batch, kappa * agents), 1 / kappa,
                    matches, "(κη, B, κN): level ∝ η/(N√B), speed per time ∝ √B")
    if gamma == 0.5:
        return Rule("dsignsgd-K", "K", Hyper(kappa * lr, batch / kappa**2, kappa**2 * agents),
                    1.0, matches, "(κη, B/κ², κ²N): level ∝ η/(N√B), speed per step ∝ η√B")
    gamma = check_gamma(gamma)
    return Rule("dsignsgd-K", "K",
                Hyper(kappa * lr, batch / kappa ** (1 / gamma), kappa**2 * agents), 1.0, matches,
                "(κη, B/κ^{1/γ}, κ²N): level ∝ η/(N B^γ), speed per step ∝ η B^γ")


def noise_compensation(batch: float, alpha: float, gamma: float = 0.5) -> float:
    """Noise scale ×α is compensated by ``B → α^{1/γ}B`` (σ enters as σB^{−γ}, §1, §5a;
    γ = ½: ``α²B``)."""
    batch = check_positive("batch", batch)
    alpha = check_positive("alpha", alpha)
    if gamma == 0.5:
        return batch * alpha**2
    return batch * alpha ** (1 / check_gamma(gamma))
