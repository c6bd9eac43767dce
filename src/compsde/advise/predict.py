"""Turn a noise measurement into predictions per method and a recommendation (THEORY.md §3–6).

Notation (all at the measured batch B, i.e. σ already includes 1/√B): ``V = Σ_j Var(g_j)``
(Welford), ``S1 = Σ_j σ_j``, ``S2 = Σ_j σ_j²`` (Student-t scales), ν̂ the tail index,
``ℓ = ℓ_ν = 2f_ν(0)`` (§3), L the top Hessian eigenvalue, ω̂ a compressor's measured ω.
Model: near the optimum f is a quadratic with largest curvature L and diagonal noise.

- **DSGD**(η): ``E f* = ηV/(4N)`` — the SDE's stationary covariance P solves ``HP + PH = ηΣ/N``,
  so ``½ tr(HP) = η tr Σ/(4N)`` for any H (§4). None when ν̂ ≤ 2 (§6) or η ≥ 2/L (discrete).
- **DCSGD**(C, η): ``tr S = (1+ω̂)V + ω̂ E‖∇f‖²`` and ``E‖∇f‖² ≤ 2L E f`` give
  ``E f* = η(1+ω̂)V/(4Nρ)``, ``ρ = 1 − ηLω̂/(2N)`` (§4 bound with equality at H = L·I);
  rate ρ. None when ν̂ ≤ 2 or η ≥ 2N/((N+ω̂)L) (discrete stability limit).
- **DSignSGD**: Phase 3 (§3) contracts coordinate j at rate ``η_s ℓ λ_j/σ_j``; we run it at the
  lr matching DSGD's rate ``ηλ`` for the noise-weighted scale ``σ_eff = S2/S1``:
  ``η_s = η σ_eff/ℓ``. Then (diagonal H) ``E f* = η_s S1/(4ℓN) = η S2/(4ℓ²N)``, finite for
  every ν > 0. Gaussian noise: ``S2/ℓ² = (π/2) V`` — sign pays π/2 in loss at equal speed.

Speed, relative to DSGD(η): ``rate`` is the per-step contraction near the optimum (ρ for
DCSGD, 1 for DSignSGD by the choice of η_s); ``drift`` is the first-order decrease at the measured
point, ``η_m ∇fᵀE[d_m] / (η‖∇f‖²)`` (1 for DSGD/DCSGD, unbiased; for DSignSGD
``(η_s/η) Σ_j |∂_j f| φ_j / Σ_j (∂_j f)²`` with ``φ_j = 2F_ν(|∂_j f|/σ_j) − 1``, §3) — below 1
when coordinates are in Phase 1, where sign moves by η_s whatever the gradient. ``speed`` is the
smaller of the two.
**Batch law** (§5a): the measured exponent γ̂ of ``scale ∝ B^{−γ}`` (``m.gamma``; ½ where not
measured) makes every loss ∝ ``B^{−2γ}``, so a loss factor ``F`` needs the batch ×``F^{1/(2γ)}``
(``F`` at γ = ½); DSGD/DCSGD's agents follow the same law, DSignSGD's mean of N bounded signs
keeps ``1/N`` whatever the tails. ``γ̂ ≤ GAMMA_FLOOR``: no batch (nor, for DSGD/DCSGD, agents)
recovers the loss — DSignSGD is matched by agents ``N·F``, the others by the lr ``η/F``.
**Recommendation**: the reference loss is DSGD's (or, if it has none, the lowest finite one);
every method with a finite loss is brought to it by the batch rule (loss factor
``F = F_m/F_ref``, §5's ``(1+ω)/ρ`` for DCSGD; batch ×``F^{1/(2γ)}``, the knob above where
that is impossible); its time per step is ``t_compute · (batch factor) + t_codec + t_comm``
(the codec's measured encode + decode time, :mod:`.codec_time`; alpha-beta, :mod:`.network`);
the score is time per step / speed (÷F more for an lr match), i.e. wall time to the same loss
at the same progress. Lowest score wins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import compressors
from .._checks import check_float, check_int, check_positive
from ..diagnose.batch_law import GAMMA_FLOOR, batch_factor
from ..diagnose.measure import NoiseMeasurement
from ..scaling import dcsgd_from_dsgd
from ..theory import ell, stability_limit
from . import network
from .beyond import OtherMethod, other_methods
from .codec_time import codec_seconds as measure_codec

CLOSE_CALL = 1.15     # a runner-up within 15 % of the best score is reported as a close call
ASSUMPTIONS = (
    "noise: diagonal (per coordinate, correlations ignored); Var(g_j) from Welford, Student-t "
    "scale σ_j and one shared ν̂ from the t fit; measured at batch B at this point of training, "
    "other batches follow the measured law σ·(B/B')^γ̂ (γ̂ from B, 4B, 16B means, THEORY.md "
    "§5a; γ = ½ where it was not measured)",
    "landscape: near the optimum a quadratic with largest curvature L (power iteration); "
    "stationary losses are leading-order SDE values (THEORY.md §4); DCSGD uses "
    "E‖∇f‖² ≤ 2L·E f (an upper bound), DSignSGD a Hessian diagonal in the parameters (Phase 3)",
    "DSignSGD runs at the lr matching DSGD's convergence rate, η_s = η·σ_eff/ℓ_ν with "
    "σ_eff = Σσ_j²/Σσ_j",
    "time per step: compute ∝ batch + the codec's encode/decode time where measured + ring "
    "allreduce/all-gather (alpha-beta); 'matched' raises the batch until the predicted "
    "stationary loss equals the reference",
)


@dataclass
class Prediction:
    """One method's predictions (module docstring); None where a quantity does not exist."""

    spec: str
    method: str
    compressor: str | None
    omega: float | None
    omega_nominal: float | None
    lr: float
    batch: int
    agents: int
    stationary_loss: float | None
    loss_note: str
    rate: float | None
    drift: float | None
    bytes_per_step: int
    collective: str
    moved_bytes: float
    comm_seconds: float | None
    compute_seconds: float | None
    codec_seconds: float | None = None
    match_factor: float | None = None
    match_batch: int | None = None
    match_lr: float | None = None
    match_agents: int | None = None
    match_knob: str | None = None
    match_compute_seconds: float | None = None
    score: float | None = None
    adjustments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finite(self) -> bool:
        return self.stationary_loss is not None

    @property
    def speed(self) -> float:
        """min(rate, drift) relative to DSGD (module docstring); 0 if no rate."""
        if self.rate is None:
            return 0.0
        return min(self.rate, self.drift) if self.drift is not None else self.rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Advice:
    """Predictions for every method, the recommendation and the assumptions behind them."""

    measurement: NoiseMeasurement
    lr: float
    batch: int
    agents: int
    bandwidth: float | None
    latency: float
    curvature: float | None
    compute_seconds: float | None
    predictions: list[Prediction]
    reference: str | None
    recommendation: dict[str, Any] | None
    warnings: list[str]
    assumptions: tuple[str, ...] = ASSUMPTIONS
    others: list[OtherMethod] = field(default_factory=list)   # beyond the paper, not ranked

    def by_spec(self, spec: str) -> Prediction:
        for p in self.predictions:
            if p.spec == spec:
                return p
        raise KeyError(spec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": {"lr": self.lr, "batch": self.batch, "agents": self.agents,
                       "bandwidth_bytes_per_s": self.bandwidth, "latency_s": self.latency,
                       "L": self.curvature, "compute_seconds": self.compute_seconds},
            "measurement": self.measurement.to_dict(),
            "predictions": [p.to_dict() for p in self.predictions],
            "reference": self.reference, "recommendation": self.recommendation,
            "warnings": self.warnings, "assumptions": list(self.assumptions),
            "others": [o.to_dict() for o in self.others],
        }


def _no_variance_note(m: NoiseMeasurement) -> str:
    if m.nu <= 1:
        return (f"none: ν̂ = {m.nu:.3g} ≤ 1, the noise has no mean and the updates no "
                f"expectation; expect divergence (THEORY.md §6)")
    return (f"none: infinite variance ({m.variance_verdict()}): no SDE and no stationary "
            f"loss, the loss does not settle (THEORY.md §6)")


def advise(measurement: NoiseMeasurement, *, lr: float, agents: int, batch: int | None = None,
           candidates: list[str] | None = None, bandwidth: float | None = None,
           latency: float = 50e-6, compute_seconds: float | None = None,
           codec_seconds: str | Mapping[str, float] | None = None) -> Advice:
    """Predict DSGD, DCSGD (each measured compressor) and DSignSGD and recommend one.

    ``candidates`` are the DCSGD compressors to assess (default: every measured one);
    ``batch`` defaults to the batch the noise was measured at (it must match it if both are
    given); ``bandwidth`` in bytes/s (None: communication is free), ``latency`` in seconds;
    ``compute_seconds`` (time of one forward+backward at batch B) defaults to the measured one.
    ``codec_seconds``: each method's encode + decode time per step, ``"measure"`` to time the
    hooks' codecs on this machine (:func:`.codec_time.codec_seconds`), a mapping from method
    spec (``dsgd``, ``dsignsgd``, ``dcsgd:<compressor>``) to seconds, or None (not counted).
    """
    m = measurement
    lr = check_positive("lr", lr)
    agents = check_int("agents", agents, minimum=1)
    if batch is not None:
        batch = check_int("batch", batch, minimum=1)
        if m.batch is not None and batch != m.batch:
            raise ValueError(f"batch must equal the batch the noise was measured at "
                             f"({m.batch}), got {batch}")
    batch = batch or m.batch or 1
    if bandwidth is not None:
        bandwidth = check_positive("bandwidth", bandwidth)
    latency = check_float("latency", latency, low=0.0)
    compute = compute_seconds if compute_seconds is not None else m.compute_seconds
    specs = candidates if candidates is not None else list(m.omegas)
    missing = [s for s in specs if compressors.make(s).spec not in m.omegas]
    if missing:
        raise ValueError(f"candidates must be among the measured compressors "
                         f"({', '.join(m.omegas)}), got {', '.join(missing)}")
    L = m.curvature.value if m.curvature is not None and m.curvature.value > 0 else None
    nu = m.nu
    ell_nu = ell(None if math.isinf(nu) else nu)
    v_sum, s1, s2 = m.variance_sum, m.scale_sum, m.scale_sq_sum
    warnings: list[str] = []
    if 2 < nu <= 4:
        warnings.append(f"ν̂ = {nu:.3g} ≤ 4: the noise has no fourth moment, the Welford "
                        f"variance (DSGD/DCSGD losses) converges slowly; treat them as rough")
    if L is None:
        warnings.append("curvature L unknown or ≤ 0: stability limits and ρ are not applied")

    if isinstance(codec_seconds, str) and codec_seconds != "measure":
        raise ValueError(f"codec_seconds must be 'measure', a mapping from method spec to "
                         f"seconds, or None; got {codec_seconds!r}")

    def comm(method: str, comp: Any) -> tuple[int, str, float, float | None]:
        kind, payload, moved = network.method_traffic(method, comp, m.d, agents)
        t = None if bandwidth is None else network.traffic_seconds(kind, moved, agents,
                                                                    bandwidth, latency)
        return math.ceil(payload), kind, moved, t

    def codec(spec: str, method: str, comp: Any) -> float | None:
        if codec_seconds is None:
            return None
        if codec_seconds == "measure":
            return measure_codec(method, comp, m.d, agents)
        return check_float(f"codec_seconds[{spec!r}]", codec_seconds.get(spec, 0.0), low=0.0)

    preds: list[Prediction] = []
    # -- DSGD and DCSGD ------------------------------------------------------------------------
    for spec in ["dsgd", *(f"dcsgd:{compressors.make(s).spec}" for s in specs)]:
        comp = None if spec == "dsgd" else compressors.make(spec.split(":", 1)[1])
        est = None if comp is None else m.omegas[comp.spec]
        omega = 0.0 if est is None else est.omega
        method = "dsgd" if comp is None else "dcsgd"
        rho = 1.0 - (lr * L * omega / (2 * agents) if L else 0.0)
        limit = stability_limit("dcsgd", agents=agents, L=L, omega=omega) if L else math.inf
        loss: float | None = None
        if not m.finite_variance:
            note = _no_variance_note(m)
        elif lr >= limit:
            note = (f"none: unstable, lr ≥ {limit:.3g} = 2N/((N+ω)L) (discrete limit, "
                    f"THEORY.md §4)")
        else:
            loss = lr * (1 + omega) * v_sum / (4 * agents * rho)
            note = "η(1+ω)V/(4Nρ)" if comp is not None else "ηV/(4N)"
        nbytes, kind, moved, t_comm = comm(method, comp)
        preds.append(Prediction(
            spec=spec, method=method, compressor=None if comp is None else comp.spec,
            omega=None if est is None else omega,
            omega_nominal=None if est is None else est.nominal, lr=lr, batch=batch,
            agents=agents, stationary_loss=loss, loss_note=note,
            rate=rho if loss is not None else None, drift=1.0 if nu > 1 else None,
            bytes_per_step=nbytes,
            collective=kind, moved_bytes=moved, comm_seconds=t_comm, compute_seconds=compute,
            codec_seconds=codec(spec, method, comp)))
    # -- DSignSGD ------------------------------------------------------------------------------
    sigma_eff = s2 / s1 if s1 > 0 else 0.0
    lr_sign = lr * sigma_eff / ell_nu
    nbytes, kind, moved, t_comm = comm("dsignsgd", None)
    sign_loss = lr_sign * s1 / (4 * ell_nu * agents) if s1 > 0 else None
    sign = Prediction(
        spec="dsignsgd", method="dsignsgd", compressor="sign", omega=None, omega_nominal=None,
        lr=lr_sign, batch=batch, agents=agents, stationary_loss=sign_loss,
        loss_note="η_s·Σσ/(4ℓN), Phase 3" if sign_loss is not None else "no noise measured",
        rate=1.0 if sign_loss is not None else None,
        drift=_sign_drift(m, lr_sign / lr), bytes_per_step=nbytes, collective=kind,
        moved_bytes=moved, comm_seconds=t_comm, compute_seconds=compute,
        codec_seconds=codec("dsignsgd", "dsignsgd", None))
    preds.append(sign)
    if L and sign_loss is not None:
        live = m.fit.scale[~m.fit.degenerate]
        y_stat = (L * lr_sign / (4 * agents * ell_nu * live)).sqrt()
        outside = float((y_stat > 1).double().mean())
        if outside > 0.1:
            warnings.append(f"DSignSGD: {outside:.0%} of coordinates would sit outside Phase 3 at "
                            f"stationarity (Y > 1 at curvature L); its loss is less accurate")
    law = m.batch_law
    if law is None:
        warnings.append("batch law not measured (needs 64 mini-batches): batch and agent rules "
                        "assume the Gaussian γ = ½")
    elif law.flat:
        warnings.append(f"batch law {law.text()} ≤ {GAMMA_FLOOR}: averaging a batch does not "
                        f"shrink the noise, no batch recovers a loss; matched by DSignSGD's "
                        f"agents (its mean of signs falls as 1/N) or a smaller lr")
    reference, recommendation = _recommend(preds, lr, batch, agents, L, bandwidth, compute,
                                           warnings, m.gamma)
    others = other_methods(m.d, agents, lr_sign, s1, None if math.isinf(nu) else nu,
                           bandwidth, latency)
    return Advice(m, lr, batch, agents, bandwidth, latency, L, compute, preds, reference,
                  recommendation, warnings, others=others)


def _sign_drift(m: NoiseMeasurement, lr_ratio: float) -> float | None:
    """``(η_s/η) Σ|∂_j f| φ_j / Σ(∂_j f)²`` on the kept coordinates (module docstring)."""
    live = ~m.fit.degenerate
    loc = m.fit.loc[live]
    denom = float(loc.pow(2).sum())
    if denom <= 0:
        return None
    return lr_ratio * float((loc.abs() * m.sign_means().abs()).sum()) / denom


def _match(p: Prediction, factor: float, gamma: float, batch: int,
           agents: int) -> tuple[str, float, int, float, float]:
    """The knob that divides ``p``'s loss by ``factor`` (module docstring, §5a):
    ``(knob, batch multiplier, agents, lr, speed multiplier)``."""
    flat = gamma <= GAMMA_FLOOR
    if factor <= 1 and flat:
        return "none", 1.0, agents, p.lr, 1.0
    if not flat:
        mult = factor ** (1 / (2 * gamma))
        b = max(1, math.ceil(batch * mult - 1e-9))
        lr = p.lr * (batch / b) ** gamma if p.method == "dsignsgd" else p.lr
        return "batch", mult, agents, lr, 1.0
    if p.method == "dsignsgd":
        return "agents", 1.0, max(1, math.ceil(agents * factor - 1e-9)), p.lr, 1.0
    return "lr", 1.0, agents, p.lr / factor, 1.0 / factor


def _recommend(preds: list[Prediction], lr: float, batch: int, agents: int, L: float | None,
               bandwidth: float | None, compute: float | None,
               warnings: list[str], gamma: float = 0.5
               ) -> tuple[str | None, dict[str, Any] | None]:
    finite = [p for p in preds if p.finite]
    if not finite:
        return None, None
    dsgd = preds[0]
    ref = dsgd if dsgd.finite else min(finite, key=lambda p: p.stationary_loss)  # type: ignore
    ref_loss = float(ref.stationary_loss)  # type: ignore[arg-type]
    if compute is None:
        warnings.append("compute time per step unknown: " + (
            "only communication counts in the time per step" if bandwidth is not None
            else "scores are relative compute (batch) cost"))
    unit = compute if compute is not None else (0.0 if bandwidth is not None else 1.0)
    for p in finite:
        factor = float(p.stationary_loss) / ref_loss  # type: ignore[arg-type]
        p.match_factor = factor
        knob, mult, p.match_agents, p.match_lr, pace = _match(p, factor, gamma, batch, agents)
        p.match_knob = knob
        p.match_batch = max(1, math.ceil(batch * mult - 1e-9))
        p.match_compute_seconds = None if compute is None else compute * mult
        step = unit * mult + (p.comm_seconds or 0.0) + (p.codec_seconds or 0.0)
        p.score = step / (p.speed * pace) if p.speed > 0 else math.inf
        p.adjustments = _adjustments(p, ref, lr, batch, agents, L, gamma)
    ranked = sorted(finite, key=lambda p: (p.score, p.bytes_per_step))  # type: ignore
    best = ranked[0]
    units = "s" if compute is not None or bandwidth is not None else "relative units"
    why = (f"lowest predicted time per step at the reference loss {ref_loss:.3g} of "
           f"{ref.spec}, divided by the speed: {best.score:.3g} {units}")
    if best.match_knob in ("agents", "lr"):
        why += f" (matched by its {best.match_knob}: no batch recovers the loss at γ̂ = {gamma:.3g})"
    if not dsgd.finite:
        why = f"DSGD has no stationary loss ({dsgd.loss_note.removeprefix('none: ')}); " + why
    runner = ranked[1] if len(ranked) > 1 else None
    if runner is not None and runner.score <= CLOSE_CALL * best.score:  # type: ignore[operator]
        why += (f"; close call: {runner.spec} is within {CLOSE_CALL - 1:.0%} "
                f"({runner.score:.3g}), well inside the model's error")
    return ref.spec, {"spec": best.spec, "lr": best.match_lr, "batch": best.match_batch,
                      "agents": best.match_agents, "knob": best.match_knob, "gamma": gamma,
                      "stationary_loss": ref_loss, "why": why,
                      "runner_up": None if runner is None else runner.spec}


def _impossible(knob: str, gamma: float, instead: str) -> dict[str, Any]:
    return {"knob": knob, "lr": None, "batch": None, "agents": None, "possible": False,
            "formula": f"impossible at γ̂ = {gamma:.3g} ≤ {GAMMA_FLOOR}: the noise scale does not "
                       f"fall with the {knob} (B^{{−γ}}); {instead}",
            "matches": {"stationary_loss": False, "speed_steps": False}}


def _adjustments(p: Prediction, ref: Prediction, lr: float, batch: int, agents: int,
                 L: float | None, gamma: float = 0.5) -> list[dict[str, Any]]:
    """Hyperparameters that bring ``p`` to the reference loss by one knob (§5, §5a)."""
    if p is ref or p.match_factor is None:
        return []
    f = p.match_factor
    flat = gamma <= GAMMA_FLOOR
    instead = ("use DSignSGD's agents or a smaller lr" if p.method != "dsignsgd"
               else "use its agents or a smaller lr")
    if p.method == "dcsgd" and ref.method == "dsgd":
        out = []
        for via in ("batch", "agents", "lr"):
            if flat and via != "lr":
                out.append(_impossible(via, gamma, instead))
                continue
            rule = dcsgd_from_dsgd(lr, batch, agents, p.omega or 0.0, via=via, L=L,
                                   first_order=L is None, gamma=gamma if via != "lr" else 0.5)
            out.append({"knob": via, "lr": rule.config.lr, "batch": rule.config.batch,
                        "agents": rule.config.agents, "formula": rule.formula,
                        "matches": rule.matches, "possible": True})
        return out
    law = "" if gamma == 0.5 else f"^(1/(2γ)), γ̂ = {gamma:.3g}"
    out = []
    mult = batch_factor(f, gamma)
    if mult is None:
        out.append(_impossible("batch", gamma, instead))
    else:
        lr_b = p.lr * mult ** -gamma if p.method == "dsignsgd" else p.lr
        out.append({"knob": "batch", "lr": lr_b, "batch": batch * mult, "agents": agents,
                    "formula": f"B·(F/F_ref){law}" + (" (η_s ∝ σ ∝ B^−γ)"
                                                      if p.method == "dsignsgd" else ""),
                    "matches": {"stationary_loss": True, "speed_steps": True}, "possible": True})
    if p.method == "dsignsgd":     # a mean of N bounded signs: 1/N whatever the tails
        out.append({"knob": "agents", "lr": p.lr, "batch": batch, "agents": agents * f,
                    "formula": "N·F/F_ref (signs are bounded: 1/N for every γ)",
                    "matches": {"stationary_loss": True, "speed_steps": True}, "possible": True})
    elif mult is None:
        out.append(_impossible("agents", gamma, instead))
    else:
        out.append({"knob": "agents", "lr": p.lr, "batch": batch, "agents": agents * mult,
                    "formula": f"N·(F/F_ref){law}",
                    "matches": {"stationary_loss": True, "speed_steps": True}, "possible": True})
    out.append({"knob": "lr", "lr": p.lr / f, "batch": batch, "agents": agents,
                "formula": "η·F_ref/F (speed per step × F_ref/F)",
                "matches": {"stationary_loss": True, "speed_steps": False}, "possible": True})
    return out
