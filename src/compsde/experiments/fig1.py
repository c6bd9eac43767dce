"""Figure 1 of the paper: the SDEs track DSGD, DCSGD and DSignSGD (THEORY.md §3, §7).

Four panels, each the algorithm's mean loss over R runs against its SDE's (Euler–Maruyama,
dt = η, one SDE step per iteration):

A. DSGD on Rosenbrock.  B. DCSGD (Rand-k) on an embedded saddle.
C. DSignSGD on a convex quadratic: the full SDE, and each phase model in its phase — the
   Phase-1 ODE, the Phase-2 drift bounds (two ODEs), the Phase-3 linearised SDE.
D. DCSGD (Rand-k) training a small MLP on Fashion-MNIST: full-batch gradient plus injected
   Gaussian noise, so the SDE's noise model is exact.

Verdicts (docs/THEORY.md §10; per panel in ``fig1.json``): two mean curves *agree* when at every
record ``|mean_a − mean_b| ≤ z · √(se_a² + se_b²)`` (z = 4). Panel A's mean is decided by the
drift, so A also compares the across-run *spread* of the loss (its standard deviation, se by the
delta method), which the diffusion decides. The phase models are approximations with known
error, so they are checked against the band the theory gives: in Phase 1 the algorithm lies in
the time-rescaled ODE band of drift ``[φ(3/2), 1]``; in Phase 2 between the two bound ODEs; in
Phase 3 the stationary loss (time-average over the last 30 % of the run) must agree, and the
run must be long enough for that window to be stationary (it starts at least
``ln(f_entry/f_∞) + STATIONARY_MARGIN`` relaxation times ``σ/(2ℓλ)`` after Phase 3 begins),
else the check fails as "not stationary".
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..nn.data import check_data
from ..problem import Problem
from ..recording import RunResult
from ..sde import simulate_sde
from ..sde.phases import (
    THRESHOLDS,
    phase_builder,
    phase_labels,
    phase_windows,
    sign_mean_function,
)
from ..simulation import simulate
from ..theory import QuadraticModel, stationary_loss
from ..theory._laws import ell
from ..validate import compare_curves, compare_spread_ratio, spread_check
from ..verdicts import check, panel
from .registry import FigureOutcome, figure

Z = 4.0
ROUNDOFF = 1e-9  # relative slack for deterministic records (standard error 0)
STATIONARY_MARGIN = 3.0  # relaxation times past the decay from f_entry to f_∞ (e⁻³ ≈ 5 %)
CONFIGS: dict[str, dict[str, Any]] = {
    "quick": {"runs": 300, "mlp_runs": 48, "mlp_images": 256, "mlp_steps": 150},
    "full": {"runs": 500, "mlp_runs": 500, "mlp_images": 512, "mlp_steps": 300},
    # a reduced run of the same code path, for the test suite (shorter horizons, fewer runs)
    "test": {"runs": 100, "mlp_runs": 24, "mlp_images": 96, "mlp_steps": 40,
             "A": {"steps": 1500}, "B": {"steps": 600}, "C": {"x0": 3.0, "steps": 1400}},
}
ROSENBROCK = dict(method="dsgd", landscape="rosenbrock", noise="gaussian:scale=3", lr=5e-4,
                  steps=6000, agents=4, x0=[-1.5, 2.0])
SADDLE = dict(method="dcsgd:randk:k=1", landscape="saddle:d=4,neg=1",
              noise="gaussian:scale=0.1", lr=0.01, steps=1500, agents=4,
              x0=[0.0, 0.5, 0.5, 0.5])
QUADRATIC = dict(method="dsignsgd", landscape="quadratic:d=2", noise="gaussian:scale=1",
                 lr=0.01, steps=1800, agents=4, x0=5.0)
# DCSGD where the compression of the gradient dominates: ω = 63, σ = 0.1 ≪ |∂f|, so the
# covariance's ω(∂f)² part is about 100× its (1+ω)σ²/N part over the judged stretch.
GRADIENT = dict(method="dcsgd:randk:k=1", landscape="quadratic:d=64", noise="gaussian:scale=0.1",
                lr=0.01, steps=300, agents=2, x0=1.0)
MLP = dict(method="dcsgd:randk:ratio=0.1", noise="gaussian:scale=0.1", lr=0.2, agents=4,
           hidden=16)


def _pair(cfg: dict[str, Any], runs: int, seed: int, progress: bool, records: int = 150,
          **extra: Any) -> tuple[RunResult, RunResult]:
    args = {k: v for k, v in cfg.items() if k not in ("method", "landscape", "noise")}
    args.update(runs=runs, seed=seed, record_every=max(1, cfg["steps"] // records),
                progress=progress)
    alg = simulate(cfg["method"], cfg["landscape"], cfg["noise"], **args)
    sde = simulate_sde(cfg["method"], cfg["landscape"], cfg["noise"], **args, **extra)
    return alg, sde


def _gap_check(stats: dict[str, Any], what: str) -> dict[str, Any]:
    return check(f"{what}: largest gap over records, in se of the gap", stats["max_z"], 0.0,
                 relation="at_most", k=0.0, absolute=Z,
                 rule=f"{what}: at every record the gap is ≤ {Z:g}·se of the gap "
                      f"(worst at step {stats['max_z_step']})")


def _agreement(alg: RunResult, sde: RunResult, what: str, spread: bool = False) -> dict[str, Any]:
    """Mean curves within ``Z`` se at every record; with ``spread``, also the spread curves."""
    stats = compare_curves(alg, sde, Z)
    checks = [_gap_check(stats, f"{what}, mean loss")]
    if spread:
        ratio = compare_spread_ratio(alg, sde, Z)
        if ratio["judged_records"]:
            checks.append(spread_check(ratio, f"{what}, spread of the loss"))
    return panel(checks, detail=f"{what}: largest gap of the means {stats['max_z']:.2f} SE at "
                                f"step {stats['max_z_step']} (tolerance {Z:g} SE)",
                 max_z=stats["max_z"], max_relative_gap=stats["max_relative_gap"])


def panel_mean(cfg: dict[str, Any], runs: int, seed: int, progress: bool,
               what: str, spread: bool = False) -> dict[str, Any]:
    """Panels A and B: the algorithm and its SDE, mean (and spread) curves compared."""
    alg, sde = _pair(cfg, runs, seed, progress)
    return {"results": {"algorithm": alg, "SDE": sde}, **_agreement(alg, sde, what, spread)}


def panel_gradient(cfg: dict[str, Any], runs: int, seed: int, progress: bool) -> dict[str, Any]:
    """Panel E: DCSGD where ω(∂f)² dominates; the SDE's mean and the exact discrete
    closed-form curve (THEORY.md §4, exact for Rand-k on a diagonal quadratic) both judged.

    The spread is not judged here: from x0 = 1 in every coordinate Rand-1's first-order loss
    increment is the same whichever coordinate it keeps, so the loss spread starts at second
    order, where a Gaussian diffusion is not the algorithm (THEORY.md §10)."""
    from ..theory import loss_curve

    what = "DCSGD Rand-1 on a 64-d quadratic, gradient-dominated"
    part = panel_mean(cfg, runs, seed, progress, what)
    alg = part["results"]["algorithm"]
    model = QuadraticModel.from_problem(cfg["method"], cfg["landscape"], cfg["noise"],
                                        lr=cfg["lr"], agents=cfg["agents"], x0=cfg["x0"])
    exact = loss_curve(model, alg.steps, "discrete").loss
    se = alg.loss_se[1:]
    gap = np.abs(alg.loss_mean - exact)[1:]
    zs = np.where(se > 0, gap / np.maximum(se, 1e-300), np.where(gap > 0, np.inf, 0.0))
    worst = int(np.argmax(zs))
    closed = check(f"{what}, mean loss against the exact discrete curve: largest gap, in se",
                   float(zs[worst]), 0.0, relation="at_most", k=0.0, absolute=Z,
                   rule=f"the algorithm's mean loss is within {Z:g}·se of the exact discrete "
                        f"recursion (with its gradient part ηλ²ω̄/N) at every record (worst at "
                        f"step {int(alg.steps[worst + 1])})")
    checks = [*part["checks"], closed]
    return part | panel(checks, detail=part["detail"]) | {"exact_discrete": exact.tolist()}


def _window_steps(window: tuple[float, float], lr: float) -> tuple[int, int]:
    return round(window[0] / lr), round(window[1] / lr)


def panel_phases(cfg: dict[str, Any], runs: int, seed: int,
                 progress: bool) -> dict[str, Any]:
    """Panel C: DSignSGD on a quadratic, the full SDE and the three phase models."""
    alg, sde = _pair(cfg, runs, seed, progress, records=240, record_mean_x=True)
    problem = Problem(cfg["method"], cfg["landscape"], cfg["noise"], lr=cfg["lr"],
                      agents=cfg["agents"], x0=cfg["x0"])
    labels = phase_labels(problem, torch.from_numpy(sde.extra["x_mean"])).numpy()
    windows = phase_windows(labels, alg.time)
    base = {k: v for k, v in cfg.items() if k not in ("method", "landscape", "noise", "x0",
                                                      "steps")}
    spec = (cfg["method"], cfg["landscape"], cfg["noise"])
    lr = cfg["lr"]
    checks: dict[str, dict[str, Any]] = {"full SDE": _agreement(alg, sde, "full SDE",
                                                                spread=True)}
    curves: dict[str, RunResult] = {}
    t_alg, m_alg, se_alg = alg.time, alg.loss_mean, alg.loss_se

    def band_check(name: str, rows: np.ndarray, low: np.ndarray, high: np.ndarray,
                   what: str) -> dict[str, Any]:
        tol = Z * se_alg[rows] + ROUNDOFF * np.abs(m_alg[rows])
        outside = np.maximum(low - m_alg[rows], m_alg[rows] - high)
        with np.errstate(invalid="ignore", divide="ignore"):
            worst = float(np.max(np.where(outside > 0, outside / np.maximum(tol, 1e-300), 0.0),
                                 initial=0.0)) if rows.any() else np.nan
        entry = check(f"{name}: largest excursion outside the band, in units of {Z:g}·se",
                      worst, 1.0, relation="at_most", k=0.0,
                      rule=f"{name}: the algorithm's mean lies within {Z:g}·se of {what} "
                           f"at every record of the phase")
        return panel([entry], detail=f"{what}: {entry['verdict']}")

    def missing(name: str) -> dict[str, Any]:
        return panel([check(f"{name}: records in the phase window", 0.0, 1.0,
                            relation="at_least", k=0.0)], detail=f"no {name} window found")

    if 1 in windows:
        k0, k1 = _window_steps(windows[1], lr)
        ode = simulate_sde(*spec, **base, x0=cfg["x0"], steps=max(k1, 1), runs=1,
                           model=phase_builder("phase1"))
        curves["phase1"] = ode
        slow = float(sign_mean_function(problem.noise)(torch.tensor(THRESHOLDS[1],
                                                                    dtype=torch.float64)))
        rows = (t_alg >= windows[1][0]) & (t_alg <= windows[1][1])
        low = np.interp(t_alg[rows], ode.time, ode.loss_mean)
        high = np.interp(slow * t_alg[rows], ode.time, ode.loss_mean)
        checks["phase 1"] = band_check("phase 1", rows, low, high,
                                       f"the Phase-1 ODE band of drift [{slow:.3f}, 1] for "
                                       f"t <= {windows[1][1]:.2f}")
    else:
        checks["phase 1"] = missing("phase 1")

    def restart(k: int) -> torch.Tensor:
        return simulate(*spec, **base, x0=cfg["x0"], steps=k, runs=runs, seed=seed).final_x

    if 2 in windows:
        k0, k1 = _window_steps(windows[2], lr)
        start = restart(k0)
        length = max(k1 - k0, 1)
        bounds = {side: simulate_sde(*spec, **base, x0=start, steps=length, runs=runs,
                                     model=phase_builder(f"phase2-{side}"))
                  for side in ("slow", "fast")}
        for side, res in bounds.items():
            res.time = res.time + k0 * lr
            curves[f"phase2-{side}"] = res
        rows = (t_alg >= k0 * lr - 1e-12) & (t_alg <= k1 * lr + 1e-12)
        fast = np.interp(t_alg[rows], bounds["fast"].time, bounds["fast"].loss_mean)
        slow_b = np.interp(t_alg[rows], bounds["slow"].time, bounds["slow"].loss_mean)
        checks["phase 2"] = band_check("phase 2", rows, fast, slow_b,
                                       f"the two Phase-2 bound ODEs for t in "
                                       f"[{k0 * lr:.2f}, {k1 * lr:.2f}]")
    else:
        checks["phase 2"] = missing("phase 2")

    if 3 in windows:
        k0 = _window_steps(windows[3], lr)[0]
        total = cfg["steps"]
        p3 = simulate_sde(*spec, **base, x0=restart(k0), steps=total - k0, runs=runs,
                          seed=seed + 1, record_every=alg.config["record_every"],
                          model=phase_builder("phase3"))
        p3.time = p3.time + k0 * lr
        curves["phase3"] = p3
        checks["phase 3"] = _phase3_check(cfg, alg, p3, windows[3][0])
    else:
        checks["phase 3"] = missing("phase 3")

    detail = "; ".join(f"{name}: {c['verdict']}" for name, c in checks.items())
    flat = [item for c in checks.values() for item in c["checks"]]
    summary = panel(flat, rule="the full SDE agrees with the algorithm and each phase model "
                               "holds in its phase")   # passes iff every phase's checks pass
    return {"results": {"algorithm": alg, "SDE": sde, **curves}, "windows": windows,
            **summary, "checks": checks, "detail": detail}


def relaxation_time(model: QuadraticModel) -> float:
    """Phase-3 relaxation time of E f in SDE time: ``σ_H / (2ℓλ_min)`` (THEORY.md §4)."""
    sigma_h = 1.0 / float(np.mean(1.0 / model.scales))
    return sigma_h / (2 * ell(model.nu) * float(np.min(model.eigenvalues)))


def _phase3_check(cfg: dict[str, Any], alg: RunResult, p3: RunResult,
                  entry_time: float) -> dict[str, Any]:
    """Stationary loss of the Phase-3 SDE vs the algorithm, once the window is stationary."""
    total_time = cfg["steps"] * cfg["lr"]
    window_start = 0.7 * total_time
    model = QuadraticModel.from_problem(cfg["method"], cfg["landscape"], cfg["noise"],
                                        lr=cfg["lr"], agents=cfg["agents"], x0=cfg["x0"])
    f_entry = float(np.interp(entry_time, alg.time, alg.loss_mean))
    f_inf = stationary_loss(model, "sde")
    needed = entry_time + relaxation_time(model) * (math.log(max(f_entry / f_inf, 1.0))
                                                  + STATIONARY_MARGIN)
    stationary = check("phase 3: start of the comparison window (SDE time)", window_start,
                       needed, relation="at_least", k=0.0,
                       rule="phase 3: the comparison window starts after the decay from the "
                            f"Phase-3 entry level plus {STATIONARY_MARGIN:g} relaxation times")
    level_a, se_a = alg.tail_mean(0.3)
    k0, total = round(entry_time / cfg["lr"]), cfg["steps"]
    level_p, se_p = p3.tail_mean(0.3 * total / max(total - k0, 1))
    level = check("phase 3: stationary loss of the Phase-3 SDE", level_p, level_a,
                  se=float(np.hypot(se_a, se_p)), k=Z)
    return panel([stationary, level],
                 detail=f"Phase-3 SDE: stationary loss {level_p:.3g} vs algorithm "
                        f"{level_a:.3g}; window from t={window_start:.2f}, stationary "
                        f"from t={needed:.2f}")


def panel_mlp(cfg: dict[str, Any], runs: int, images: int, steps: int, seed: int,
              progress: bool) -> dict[str, Any]:
    """Panel D: DCSGD (Rand-k) on a tanh MLP, full-batch gradient + injected Gaussian noise."""
    from .fig1_mlp import MLPLandscape, load_subset

    features, labels = load_subset(images)
    land = MLPLandscape(features, labels, hidden=cfg["hidden"])
    theta0 = land.init(torch.Generator().manual_seed(seed))
    run_cfg = {k: v for k, v in cfg.items() if k != "hidden"} | {
        "landscape": land, "steps": steps, "x0": theta0}
    alg, sde = _pair(run_cfg, runs, seed, progress, records=60)
    return {"results": {"algorithm": alg, "SDE": sde}, "dim": land.dim, "images": images,
            **_agreement(alg, sde, f"MLP ({land.dim} parameters, {images} images)")}


def build(preset: str, seed: int = 0, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Compute the five panels for ``preset`` ("quick", "full" or the test-size "test")."""
    check_data(["fashion-mnist"])            # panel D's, before panel A starts
    size = CONFIGS[preset]
    runs = size["runs"]
    return {
        "A": panel_mean(ROSENBROCK | size.get("A", {}), runs, seed, progress,
                        "DSGD on Rosenbrock", spread=True),
        "B": panel_mean(SADDLE | size.get("B", {}), runs, seed, progress,
                        "DCSGD Rand-k on the embedded saddle", spread=True),
        "C": panel_phases(QUADRATIC | size.get("C", {}), runs, seed, progress),
        "D": panel_mlp(MLP, size["mlp_runs"], size["mlp_images"], size["mlp_steps"], seed,
                       progress),
        "E": panel_gradient(GRADIENT, runs, seed, progress),
    }


CLAIM = ("The SDEs of DSGD, DCSGD and DSignSGD track the algorithms: mean losses agree within "
         "Monte-Carlo error on Rosenbrock, an embedded saddle, a quadratic (with each DSignSGD "
         "phase model in its phase) and an MLP.")


@figure("fig1", CLAIM, data=("fashion-mnist",))
def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False) -> FigureOutcome:
    """Compute, draw and judge Figure 1; writes ``OUT/fig1.png``."""
    from .fig1_plot import draw

    panels = build(preset, seed, progress)
    png = draw(panels, Path(out) / "fig1.png", preset)
    verdicts: dict[str, dict[str, Any]] = {}
    data: dict[str, Any] = {"curves": {}}
    for key, part in panels.items():
        verdicts[key] = {k: v for k, v in part.items() if k not in ("results", "windows")}
        data["curves"][key] = {name: {"time": res.time, "loss_mean": res.loss_mean,
                                      "loss_se": res.loss_se, "config": res.config}
                               for name, res in part["results"].items()}
        if "windows" in part:
            data["phase_windows"] = {str(k): v for k, v in part["windows"].items()}
    return FigureOutcome(name="fig1", claim=CLAIM, panels=verdicts, png=png, data=data)
