"""Find the knob values under which a target method matches a baseline (THEORY.md §4–5).

The baseline and the target are compared on the leading-order SDE predictions for one
coordinate of ``f = ½Lx²`` (noise scale σ, batch B, N agents, step η):
level ``DSGD ησ²/(4NB)``, ``DCSGD η(1+ω)σ²/(4NB(1 − ηLω/(2N)))``, ``DSignSGD ησ/(4ℓN√B)``;
speed (rate per unit time t): ``DSGD 2``, ``DCSGD 2(1 − ηLω/(2N))``, ``DSignSGD 2ℓ√B/σ`` (μ = 1),
per iteration η times that. The free knobs solve ``level = baseline level`` (and, when two knobs
are free, the speed of the chosen convention) in log space with the least change; batch and
agents are then rounded and a free lr absorbs the rounding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from .. import methods
from .._checks import check_choice, check_int, check_positive
from .._spec import parse_spec, split_head
from ..theory._laws import ell
from ..theory.stability import check_stable
from .rules import CONVENTIONS

KNOBS = ("lr", "batch", "agents")
LOSS_TOLERANCE = 0.02    # "matched" when predictions agree within 2 %
SPEED_TOLERANCE = 0.05


@dataclass(frozen=True)
class Setup:
    """A method with its resolved ω (0 for dsgd/dsignsgd) and its knobs."""

    method: str
    spec: str
    omega: float
    lr: float
    batch: float
    agents: float

    def with_knobs(self, knobs: Mapping[str, float]) -> Setup:
        values = {"lr": self.lr, "batch": self.batch, "agents": self.agents} | dict(knobs)
        values = {k: int(v) if isinstance(v, (int, np.integer)) else float(v)
                  for k, v in values.items()}
        return Setup(self.method, self.spec, self.omega, **values)


def resolve_method(spec: str, dim: int | None = None, what: str = "target") -> tuple[str, float]:
    """``(name, ω)`` of a method spec; ``dcsgd:omega=W`` gives ω directly (§1).

    Rand-k given by ``ratio`` uses ``ω = 1/ratio − 1`` when ``dim`` is unknown (exact whenever
    ratio·d is an integer); ω that depends on d (``randk:k=K``, ``qsgd``) needs ``dim``.
    """
    name, rest = split_head(spec, what)
    if name != "dcsgd":
        methods.make(spec)
        return name, 0.0
    if rest.startswith("omega"):
        _, options = parse_spec("x:" + rest, what)
        return "dcsgd", check_positive("omega", options.get("omega", "nan"))
    if not rest:
        raise ValueError(f"{what} 'dcsgd' needs a compressor with an ω, e.g. "
                         f"dcsgd:randk:ratio=0.1, dcsgd:bernoulli:p=0.2 or dcsgd:omega=9")
    try:
        method = methods.make(spec)
    except ValueError as exc:
        raise ValueError(f"{what} must be an unbiased compressor with an ω (randk, bernoulli, "
                         f"qsgd, natural, or dcsgd:omega=W): {exc}") from None
    comp = method.compressor
    if dim is None:
        if comp.name == "randk" and getattr(comp, "ratio", None) is not None:
            return "dcsgd", 1.0 / comp.ratio - 1.0
        if comp.name in ("bernoulli", "natural", "identity"):
            return "dcsgd", float(comp.omega(1))
        raise ValueError(f"{what} {spec!r} has an ω that depends on the dimension d; pass dim "
                         f"(--dim) or give ω directly as dcsgd:omega=W")
    omega = comp.omega(check_int("dim", dim, minimum=1))
    if omega is None:
        raise ValueError(f"{what} {spec!r} has no ω (biased compressor)")
    return "dcsgd", float(omega)


def level(setup: Setup, *, L: float, sigma: float, nu: float | None,
          gamma: float = 0.5) -> float:
    """Leading-order stationary loss per coordinate (module docstring); inf when unstable.

    ``gamma``: the batch law's exponent (§5a), ``σ → σ(BN)^{−γ}`` for DSGD/DCSGD and
    ``σB^{−γ}`` for DSignSGD (its mean of N signs keeps 1/N); γ = ½ is the module docstring.
    """
    eta, b, n = setup.lr, setup.batch, setup.agents
    if setup.method == "dsignsgd":
        return eta * sigma / (4 * ell(nu) * n * b**gamma)
    rho = 1 - eta * L * setup.omega / (2 * n)
    if rho <= 0:
        return math.inf
    return eta * (1 + setup.omega) * sigma**2 / (4 * (n * b) ** (2 * gamma) * rho)


def speed(setup: Setup, *, L: float, sigma: float, nu: float | None, per: str,
          leading: bool = False, gamma: float = 0.5) -> float:
    """Convergence rate per unit time (``per='T'``) or per iteration (``'K'``); μ = 1.

    ``leading`` drops DCSGD's ``ρ = 1 − ηLω/(2N)`` (the solver matches leading-order speed);
    ``gamma``: DSignSGD's rate ``2ℓB^γ/σ`` (§5a).
    """
    if setup.method == "dsignsgd":
        rate = 2 * ell(nu) * setup.batch**gamma / sigma
    elif leading:
        rate = 2.0
    else:
        rate = 2 * max(1 - setup.lr * L * setup.omega / (2 * setup.agents), 0.0)
    return rate * (setup.lr if per == "K" else 1.0)


@dataclass
class Recommendation:
    """The solver's answer: recommended knobs, why, predictions and what is matched."""

    baseline: Setup
    target: Setup
    unchanged: Setup
    vary: tuple[str, ...]
    convention: str
    why: dict[str, str]
    predicted: dict[str, float]
    matched: dict[str, bool]
    steps_factor: float
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(knob, baseline, recommended, why) for every knob."""
        out = [("method", self.baseline.spec, self.target.spec, "target method")]
        for knob in KNOBS:
            base, new = getattr(self.baseline, knob), getattr(self.target, knob)
            out.append((knob, _fmt(base), _fmt(new), self.why.get(knob, "kept")))
        if self.steps_factor != 1.0:
            out.append(("steps", "k", f"{self.steps_factor:.4g}·k",
                        "(T): same SDE time t = k·lr"))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": vars(self.baseline), "recommended": vars(self.target),
            "vary": list(self.vary), "convention": self.convention, "why": self.why,
            "predicted_loss": self.predicted, "matched": self.matched,
            "steps_factor": self.steps_factor, "notes": self.notes,
        }


def _fmt(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.4g}"


def _parse_vary(vary: str | Sequence[str]) -> tuple[str, ...]:
    items = vary.replace("+", ",").split(",") if isinstance(vary, str) else list(vary)
    named = [k.strip().lower() for k in items if k.strip()]
    twice = sorted({k for k in named if named.count(k) > 1})
    if twice:
        raise ValueError(f"vary names {', '.join(twice)} more than once; give each knob once, "
                         f"e.g. {','.join(dict.fromkeys(named))}")
    knobs = tuple(named)
    if not knobs or any(k not in KNOBS for k in knobs):
        bad = [k for k in knobs if k not in KNOBS]
        raise ValueError(f"vary must be one or more of {', '.join(KNOBS)} (comma-separated); "
                         f"got {', '.join(bad) if bad else repr(vary)}")
    return knobs


def solve(baseline: str, *, lr: float, batch: int, agents: int, target: str,
          vary: str | Sequence[str], L: float | None = None, dim: int | None = None,
          sigma: float = 1.0, nu: float | None = None, convention: str = "T",
          first_order: bool = False, fixed: Mapping[str, float] | None = None) -> Recommendation:
    """Knob values for ``target`` that match ``baseline``'s stationary loss (and speed).

    ``vary``: knobs the user may change (lr, batch, agents); ``fixed``: knobs forced to new
    values on the target (e.g. ``{"agents": 16}``). ``L`` (largest Hessian eigenvalue) is
    required whenever DCSGD is involved unless ``first_order``. Raises ValueError on bad input.
    """
    vary = _parse_vary(vary)
    convention = check_choice("convention", str(convention).upper(), CONVENTIONS)
    base_name, base_omega = resolve_method(baseline, dim, "baseline")
    tgt_name, tgt_omega = resolve_method(target, dim, "target")
    base = Setup(base_name, baseline, base_omega, check_positive("lr", lr),
                 check_int("batch", batch, minimum=1), check_int("agents", agents, minimum=1))
    fixed = dict(fixed or {})
    for knob, value in fixed.items():
        check_choice("set", knob, KNOBS)
        if knob in vary:
            raise ValueError(f"set: {knob} cannot be both set and varied")
        fixed[knob] = (check_positive(knob, value) if knob == "lr"
                       else check_int(knob, value, minimum=1))
    sigma = check_positive("sigma", sigma)
    if nu is not None:
        nu = check_positive("nu", nu)
    needs_l = "dcsgd" in (base_name, tgt_name) and not first_order
    if needs_l and L is None:
        raise ValueError("L is required: the DCSGD rules contain the step-size term ηLω/(2N) "
                         "(pass --L, an estimate of the largest Hessian eigenvalue, e.g. 1 for "
                         "quadratic:d=5; or --first-order to drop the term)")
    if L is not None:
        L = check_positive("L", L)
    if "dsignsgd" in (base_name, tgt_name) and base_name != tgt_name and nu is not None \
            and nu <= 2 and "dsgd" in (base_name, tgt_name):
        raise ValueError("nu must be > 2 to compare with DSGD/DCSGD (no variance otherwise)")
    if base_name in ("dcsgd", "dsgd") and (nu is not None and nu <= 2):
        raise ValueError(f"nu must be > 2 for a {base_name} baseline: with nu <= 2 the noise has "
                         f"no variance and {base_name} has no stationary loss (THEORY.md §6)")
    l_eff = 0.0 if first_order or L is None else L
    if L is not None and base_name != "dsignsgd":
        check_stable(base_name, base.lr, agents=base.agents, L=L, omega=base_omega, name="lr")
    start = Setup(tgt_name, target, tgt_omega, base.lr, base.batch, base.agents).with_knobs(fixed)
    kw = {"L": l_eff, "sigma": sigma, "nu": nu}
    goal = level(base, **kw)
    recommended, notes = _solve_knobs(start, vary, goal,
                                      speed(base, per=convention, leading=True, **kw),
                                      convention, kw)
    if L is not None and tgt_name != "dsignsgd":
        check_stable(tgt_name, recommended.lr, agents=int(recommended.agents), L=L,
                     omega=tgt_omega, name="lr")
    got = level(recommended, **kw)
    predicted = {"baseline": goal, "target": got, "target_unchanged": level(start, **kw)}
    matched = {"stationary_loss": bool(abs(got / goal - 1) <= LOSS_TOLERANCE)}
    for key, per in (("speed_time", "T"), ("speed_steps", "K")):
        ratio = speed(recommended, per=per, **kw) / speed(base, per=per, **kw)
        matched[key] = bool(abs(ratio - 1) <= SPEED_TOLERANCE)
    steps_factor = base.lr / recommended.lr if convention == "T" else 1.0
    why = _explain(base, recommended, vary, first_order, convention)
    if not matched["stationary_loss"]:
        notes.append(f"stationary loss not matched: predicted {got:.4g} vs {goal:.4g} "
                     f"({got / goal - 1:+.1%}); allow more knobs to vary")
    return Recommendation(base, recommended, start, vary, convention, why, predicted, matched,
                          steps_factor, notes)


def _solve_knobs(start: Setup, vary: tuple[str, ...], goal: float, goal_speed: float,
                 convention: str, kw: dict[str, Any]) -> tuple[Setup, list[str]]:
    """Least-change solution in log space, then integer rounding and lr fine-tuning."""
    notes: list[str] = []
    x0 = np.log([getattr(start, k) for k in vary])

    def residual(logs: np.ndarray, use_speed: bool) -> np.ndarray:
        cand = start.with_knobs(dict(zip(vary, np.exp(logs), strict=True)))
        lv = level(cand, **kw)
        res = [math.log(lv / goal) if math.isfinite(lv) else 50.0]
        if use_speed:
            fast = speed(cand, per=convention, leading=True, **kw)
            res.append(math.log(max(fast, 1e-300) / goal_speed))
        return np.array(res + list(1e-4 * (logs - x0)))

    use_speed = len(vary) >= 2
    sol = least_squares(residual, x0, args=(use_speed,), xtol=1e-14, ftol=1e-14)
    if use_speed and abs(residual(sol.x, True)[0]) > 1e-6:
        sol = least_squares(residual, x0, args=(False,), xtol=1e-14, ftol=1e-14)
        notes.append(f"speed ({convention}) cannot be matched with {', '.join(vary)} free")
    values = {k: float(v) for k, v in zip(vary, np.exp(sol.x), strict=True)}
    ints = [k for k in vary if k != "lr"]
    if ints:
        best = None
        for combo in np.ndindex(*(2,) * len(ints)):
            trial = dict(values)
            for k, up in zip(ints, combo, strict=True):
                trial[k] = max(1, math.floor(values[k]) + up)
            cand = start.with_knobs(trial)
            if "lr" in vary:
                cand = _fit_lr(cand, goal, kw)
            err = abs(math.log(level(cand, **kw) / goal))
            if best is None or err < best[0] - 1e-12:
                best = (err, cand)
        return best[1], notes
    return _fit_lr(start.with_knobs(values), goal, kw), notes


def _fit_lr(cand: Setup, goal: float, kw: dict[str, Any]) -> Setup:
    """Re-solve the lr alone so that the level equals ``goal`` (level is increasing in lr)."""
    lo, hi = cand.lr * 1e-3, cand.lr * 1e3
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if level(cand.with_knobs({"lr": mid}), **kw) > goal:
            hi = mid
        else:
            lo = mid
    return cand.with_knobs({"lr": math.sqrt(lo * hi)})


def _explain(base: Setup, new: Setup, vary: tuple[str, ...], first_order: bool,
             convention: str) -> dict[str, str]:
    why: dict[str, str] = {}
    for knob in KNOBS:
        ratio = getattr(new, knob) / getattr(base, knob)
        if knob not in vary and ratio == 1:
            why[knob] = "kept (not allowed to vary)" if knob not in vary else "kept"
            continue
        if knob not in vary:
            why[knob] = "set by the user"
            continue
        what = {"lr": "noise ∝ lr", "batch": "noise ∝ 1/B (σ→σ/√B)",
                "agents": "noise ∝ 1/N"}[knob]
        text = f"×{ratio:.4g}: {what}"
        if new.method == "dcsgd" and base.method == "dsgd" and len(vary) == 1:
            text += {"batch": "; B̃ = (1+ω)B/(1 − ηLω/(2N))",
                     "agents": "; Ñ = (1+ω)N + ηLω/2",
                     "lr": "; η̃ = η/(1 + ω + ηLω/(2N))"}[knob]
            if first_order:
                text += " with L-term dropped (first order)"
        elif new.method == base.method == "dsignsgd" and len(vary) >= 1:
            text += "; DSignSGD keeps η/(N√B)" + (" and √B (T)" if convention == "T"
                                                   else " and η√B (K)")
        why[knob] = text + " (THEORY.md §5)"
    return why
