"""Figure 1 of the paper: the SDEs track DSGD, DCSGD and DSignSGD (THEORY.md §3, §7).

Four panels, each the algorithm's mean loss over R runs against its SDE's (Euler–Maruyama,
dt = η, one SDE step per iteration):

A. DSGD on Rosenbrock.  B. DCSGD (Rand-k) on an embedded saddle.
C. DSignSGD on a convex quadratic: the full SDE, and each phase model in its phase — the
   Phase-1 ODE, the Phase-2 drift bounds (two ODEs), the Phase-3 linearised SDE.
D. DCSGD (Rand-k) training a small MLP on Fashion-MNIST: full-batch gradient plus injected
   Gaussian noise, so the SDE's noise model is exact.

Verdicts (per panel, in ``fig1.json``): two mean curves *agree* when at every record
``|mean_a − mean_b| ≤ z · √(se_a² + se_b²)`` (z = 4). The phase models are approximations with
known error, so they are checked against the band the theory gives: in Phase 1 the drift
magnitude lies in ``[φ(3/2), 1]`` (time-rescaled ODE band); in Phase 2 between the two bound
ODEs; in Phase 3 the stationary loss (time-average over the last 30 % of the run) must agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

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
from ..validate import compare_curves
from .registry import FigureOutcome, figure

Z = 4.0
ROUNDOFF = 1e-9  # relative slack for deterministic records (standard error 0)
CONFIGS: dict[str, dict[str, Any]] = {
    "quick": {"runs": 300, "mlp_runs": 48, "mlp_images": 256, "mlp_steps": 150},
    "full": {"runs": 500, "mlp_runs": 500, "mlp_images": 512, "mlp_steps": 300},
    # a reduced run of the same code path, for the test suite (shorter horizons, fewer runs)
    "test": {"runs": 100, "mlp_runs": 24, "mlp_images": 96, "mlp_steps": 40,
             "A": {"steps": 1500}, "B": {"steps": 600}, "C": {"x0": 3.0, "steps": 700}},
}
ROSENBROCK = dict(method="dsgd", landscape="rosenbrock", noise="gaussian:scale=3", lr=5e-4,
                  steps=6000, agents=4, x0=[-1.5, 2.0])
SADDLE = dict(method="dcsgd:randk:k=1", landscape="saddle:d=4,neg=1",
              noise="gaussian:scale=0.1", lr=0.01, steps=1500, agents=4,
              x0=[0.0, 0.5, 0.5, 0.5])
QUADRATIC = dict(method="dsignsgd", landscape="quadratic:d=2", noise="gaussian:scale=1",
                 lr=0.01, steps=1200, agents=4, x0=5.0)
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


def _agreement(alg: RunResult, sde: RunResult, what: str) -> dict[str, Any]:
    stats = compare_curves(alg, sde, Z)
    return {"verdict": "pass" if stats["agree"] else "fail",
            "detail": f"{what}: largest gap {stats['max_z']:.2f} SE at step "
                      f"{stats['max_z_step']} (tolerance {Z:g} SE)",
            "max_z": stats["max_z"], "max_relative_gap": stats["max_relative_gap"]}


def panel_mean(cfg: dict[str, Any], runs: int, seed: int, progress: bool,
               what: str) -> dict[str, Any]:
    """Panels A and B: the algorithm and its SDE, mean curves compared."""
    alg, sde = _pair(cfg, runs, seed, progress)
    return {"results": {"algorithm": alg, "SDE": sde}, **_agreement(alg, sde, what)}


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
    checks: dict[str, dict[str, Any]] = {"full SDE": _agreement(alg, sde, "full SDE")}
    curves: dict[str, RunResult] = {}
    t_alg, m_alg, se_alg = alg.time, alg.loss_mean, alg.loss_se

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
        tol = Z * se_alg[rows] + ROUNDOFF * np.abs(m_alg[rows])
        ok = bool(((m_alg[rows] >= low - tol) & (m_alg[rows] <= high + tol)).all())
        checks["phase 1"] = {"verdict": "pass" if ok else "fail",
                             "detail": f"Phase-1 ODE: algorithm within the band of drift "
                                       f"[{slow:.3f}, 1] for t <= {windows[1][1]:.2f}"}
    else:
        checks["phase 1"] = {"verdict": "fail", "detail": "no Phase-1 window found"}

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
        tol = Z * se_alg[rows] + ROUNDOFF * np.abs(m_alg[rows])
        ok = bool(((m_alg[rows] >= fast - tol) & (m_alg[rows] <= slow_b + tol)).all())
        checks["phase 2"] = {"verdict": "pass" if ok else "fail",
                             "detail": f"Phase-2 bounds: algorithm between the two bound ODEs "
                                       f"for t in [{k0 * lr:.2f}, {k1 * lr:.2f}]"}
    else:
        checks["phase 2"] = {"verdict": "fail", "detail": "no Phase-2 window found"}

    if 3 in windows:
        k0 = _window_steps(windows[3], lr)[0]
        total = cfg["steps"]
        p3 = simulate_sde(*spec, **base, x0=restart(k0), steps=total - k0, runs=runs,
                          seed=seed + 1, record_every=alg.config["record_every"],
                          model=phase_builder("phase3"))
        p3.time = p3.time + k0 * lr
        curves["phase3"] = p3
        level_a, se_a = alg.tail_mean(0.3)
        level_p, se_p = p3.tail_mean(0.3 * total / max(total - k0, 1))
        gap = abs(level_a - level_p) / np.hypot(se_a, se_p)
        checks["phase 3"] = {"verdict": "pass" if gap <= Z else "fail",
                             "detail": f"Phase-3 SDE: stationary loss {level_p:.3g} vs "
                                       f"algorithm {level_a:.3g} ({gap:.2f} SE)"}
    else:
        checks["phase 3"] = {"verdict": "fail", "detail": "no Phase-3 window found"}

    ok = all(c["verdict"] == "pass" for c in checks.values())
    detail = "; ".join(f"{name}: {c['verdict']}" for name, c in checks.items())
    return {"results": {"algorithm": alg, "SDE": sde, **curves}, "windows": windows,
            "checks": checks, "verdict": "pass" if ok else "fail", "detail": detail}


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
    """Compute the four panels for ``preset`` ("quick", "full" or the test-size "test")."""
    size = CONFIGS[preset]
    runs = size["runs"]
    return {
        "A": panel_mean(ROSENBROCK | size.get("A", {}), runs, seed, progress,
                        "DSGD on Rosenbrock"),
        "B": panel_mean(SADDLE | size.get("B", {}), runs, seed, progress,
                        "DCSGD Rand-k on the embedded saddle"),
        "C": panel_phases(QUADRATIC | size.get("C", {}), runs, seed, progress),
        "D": panel_mlp(MLP, size["mlp_runs"], size["mlp_images"], size["mlp_steps"], seed,
                       progress),
    }


CLAIM = ("The SDEs of DSGD, DCSGD and DSignSGD track the algorithms: mean losses agree within "
         "Monte-Carlo error on Rosenbrock, an embedded saddle, a quadratic (with each DSignSGD "
         "phase model in its phase) and an MLP.")


@figure("fig1", CLAIM)
def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False) -> FigureOutcome:
    """Compute, draw and judge Figure 1; writes ``OUT/fig1.png``."""
    from .fig1_plot import draw

    panels = build(preset, seed, progress)
    png = draw(panels, Path(out) / "fig1.png", preset)
    verdicts: dict[str, dict[str, Any]] = {}
    data: dict[str, Any] = {"curves": {}}
    for key, panel in panels.items():
        verdicts[key] = {k: v for k, v in panel.items() if k not in ("results", "windows")}
        data["curves"][key] = {name: {"time": res.time, "loss_mean": res.loss_mean,
                                      "loss_se": res.loss_se, "config": res.config}
                               for name, res in panel["results"].items()}
        if "windows" in panel:
            data["phase_windows"] = {str(k): v for k, v in panel["windows"].items()}
    return FigureOutcome(name="fig1", claim=CLAIM, panels=verdicts, png=png, data=data)
