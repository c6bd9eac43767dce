"""Figure 5: unbiased compression fails under fat noise; sign compression does not (THEORY.md §6).

Four panels on ``½‖x‖²`` (d = 4, N = 4, η = 0.01, x0 = 1, f(x0) = 2):

(a) DCSGD (Rand-k, k = d/4) under Student-t ν ∈ {1, 2, 3, 5}. Each run is classified:
    *diverges* — the tail-mean loss exceeds f(x0) or at least half of the runs pass the
    divergence threshold (E f = ∞ for ν ≤ 1); *never settles* — otherwise, when the mean of the
    tail losses is carried by rare bursts: mean/median > 1.25 × the Gaussian-noise value of
    the same quadratic (mean/median of a χ²_d), i.e. no finite stationary expectation (ν ≤ 2);
    *settles* — otherwise, and the tail mean is within 15 % of the exact stationary loss
    (variance σ²ν/(ν−2)). Pass: ν=1 diverges, ν=2 never settles, ν ≥ 3 settle.
(b) DCSGD under Cauchy noise of growing scale: the fraction of runs whose loss passes 100·f(x0)
    is non-decreasing in the scale and ≥ ½ at the largest. Pass: "diverges more".
(c) DSignSGD under ν ∈ {1, 2, 4, ∞}: no run diverges, every plateau is below f(x0)/10, each
    matches the exact discrete stationary loss within 4·se, and the plateau of ν = 1 is
    above the Gaussian one by more than 4 combined se (fatter → higher, level ∝ 1/ℓ_ν).
(d) DSignSGD under Cauchy noise of growing scale: no run diverges, every final mean loss is
    below f(x0), and the plateau grows with the scale (never diverges; each step moves every
    coordinate by at most η).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
from scipy import stats

from ..io import save_figure
from ..theory import QuadraticModel, stationary_loss
from .cache import RunCache
from .fig3 import run_cached, single_thread
from .registry import FigureOutcome, figure

CLAIM = ("DCSGD cannot handle fat noise (diverges at ν = 1, never settles at ν = 2) and diverges "
         "more as the noise grows; DSignSGD converges under fat noise (fatter → higher plateau) "
         "and never diverges as the noise grows")
PRESETS = {"quick": {"runs": 200, "steps": 2000}, "full": {"runs": 1000, "steps": 8000}}
BASE = {"landscape": "quadratic:d=4", "lr": 0.01, "agents": 4, "batch": 1, "x0": 1.0}
DCSGD = "dcsgd:randk:ratio=0.25"
NUS_DCSGD = (1.0, 2.0, 3.0, 5.0)
NUS_SIGN = (1.0, 2.0, 4.0, None)
SCALES_DCSGD = (0.05, 0.25, 1.0, 4.0)
SCALES_SIGN = (0.25, 1.0, 4.0, 16.0)
SPIKE_FACTOR = 1.25
SETTLE_TOLERANCE = 0.15
SIGN_MODEL_TOLERANCE = 0.0


def _noise(nu: float | None, scale: float = 1.0) -> str:
    return f"gaussian:scale={scale:g}" if nu is None else f"student-t:nu={nu:g},scale={scale:g}"


def _model(method: str, noise: str) -> QuadraticModel:
    return QuadraticModel.from_problem(method, BASE["landscape"], noise, lr=BASE["lr"],
                                       agents=BASE["agents"], x0=BASE["x0"])


def gaussian_spike_ratio(d: int) -> float:
    """mean/median of ½‖x‖² for isotropic Gaussian x in R^d (a χ²_d): the settled reference."""
    return d / float(stats.chi2(d).median())


def classify_dcsgd(sim: dict[str, Any], f0: float, theory: float, d: int) -> str:
    """'diverges', 'never settles' or 'settles' by the rules of panel (a)."""
    if sim["diverged_fraction"] >= 0.5 or not math.isfinite(sim["level"]) or sim["level"] > f0:
        return "diverges"
    if sim["level"] / sim["tail_median"] > SPIKE_FACTOR * gaussian_spike_ratio(d):
        return "never settles"
    if math.isfinite(theory) and abs(sim["level"] / theory - 1) <= SETTLE_TOLERANCE:
        return "settles"
    return "unclassified"


def _sim(cache: RunCache, method: str, noise: str, p: dict[str, int], seed: int,
         threshold: float = 1e10, progress: bool = False) -> dict[str, Any]:
    cfg = BASE | {"method": method, "noise": noise, "steps": p["steps"], "runs": p["runs"],
                  "seed": seed, "record_every": max(1, p["steps"] // 200),
                  "diverge_threshold": threshold}
    return run_cached(cache, cfg, progress=progress)


def _panel_a(cache: RunCache, p: dict[str, int], seed: int, progress: bool) -> dict[str, Any]:
    sims, rows = {}, []
    d = 4
    for i, nu in enumerate(NUS_DCSGD):
        noise = _noise(nu)
        sims[nu] = sim = _sim(cache, DCSGD, noise, p, seed + i, progress=progress)
        model = _model(DCSGD, noise)
        theory = stationary_loss(model, "discrete")
        label = classify_dcsgd(sim, model.initial_loss(), theory, d)
        want = "diverges" if nu <= 1 else "never settles" if nu <= 2 else "settles"
        rows.append({"nu": nu, "expected": want, "observed": label, "level": sim["level"],
                     "se": sim["se"], "mean_over_median": sim["level"] / sim["tail_median"],
                     "theory": theory, "diverged_fraction": sim["diverged_fraction"]})
    ok = all(r["expected"] == r["observed"] for r in rows)
    detail = "; ".join(f"ν={r['nu']:g}: {r['observed']}" for r in rows)
    return {"sims": sims, "panel": {"verdict": "pass" if ok else "fail", "detail": detail,
                                    "rows": rows,
                                    "spike_threshold": SPIKE_FACTOR * gaussian_spike_ratio(d)}}


def _panel_b(cache: RunCache, p: dict[str, int], seed: int, progress: bool) -> dict[str, Any]:
    f0 = _model(DCSGD, _noise(1.0)).initial_loss()
    sims, rows = {}, []
    for i, scale in enumerate(SCALES_DCSGD):
        sims[scale] = sim = _sim(cache, DCSGD, _noise(1.0, scale), p, seed + 10 + i,
                                 threshold=100 * f0, progress=progress)
        rows.append({"scale": scale, "diverged_fraction": sim["diverged_fraction"]})
    fractions = [r["diverged_fraction"] for r in rows]
    ok = all(b >= a for a, b in itertools.pairwise(fractions)) \
        and fractions[-1] >= 0.5 and fractions[-1] > fractions[0]
    detail = "runs past 100·f(x0): " + ", ".join(f"σ={r['scale']:g}: {r['diverged_fraction']:.0%}"
                                                  for r in rows)
    return {"sims": sims, "panel": {"verdict": "pass" if ok else "fail", "detail": detail,
                                    "rows": rows}}


def _panel_c(cache: RunCache, p: dict[str, int], seed: int, progress: bool) -> dict[str, Any]:
    sims, rows = {}, []
    for i, nu in enumerate(NUS_SIGN):
        noise = _noise(nu)
        sims[nu] = sim = _sim(cache, "dsignsgd", noise, p, seed + 20 + i, progress=progress)
        model = _model("dsignsgd", noise)
        theory = stationary_loss(model, "discrete")
        rows.append({"nu": "inf (gaussian)" if nu is None else nu, "level": sim["level"],
                     "se": sim["se"], "theory_exact_discrete": theory,
                     "phase3_prediction": stationary_loss(model, "sde"),
                     "diverged_fraction": sim["diverged_fraction"],
                     "matches_theory": abs(sim["level"] - theory)
                     <= 4 * sim["se"] + SIGN_MODEL_TOLERANCE * theory})
    f0 = _model("dsignsgd", _noise(None)).initial_loss()
    first, last = rows[0], rows[-1]
    fatter_higher = first["level"] - last["level"] > 4 * math.hypot(first["se"], last["se"])
    ok = (all(r["diverged_fraction"] == 0 and r["level"] < f0 / 10 and r["matches_theory"]
              for r in rows) and fatter_higher)
    detail = ("plateaus " + ", ".join(f"ν={r['nu']}: {r['level']:.3g}" for r in rows)
              + f"; all converge and match theory: {ok}")
    return {"sims": sims, "panel": {"verdict": "pass" if ok else "fail", "detail": detail,
                                    "rows": rows, "fatter_higher": fatter_higher}}


def _panel_d(cache: RunCache, p: dict[str, int], seed: int, progress: bool) -> dict[str, Any]:
    f0 = _model("dsignsgd", _noise(1.0)).initial_loss()
    sims, rows = {}, []
    for i, scale in enumerate(SCALES_SIGN):
        sims[scale] = sim = _sim(cache, "dsignsgd", _noise(1.0, scale), p, seed + 30 + i,
                                 threshold=100 * f0, progress=progress)
        rows.append({"scale": scale, "level": sim["level"], "final": sim["loss_mean"][-1],
                     "diverged_fraction": sim["diverged_fraction"]})
    levels = [r["level"] for r in rows]
    ok = (all(r["diverged_fraction"] == 0 and r["final"] < f0 for r in rows)
          and all(b > a for a, b in itertools.pairwise(levels)))
    detail = "no run diverges; tail levels " + ", ".join(f"σ={r['scale']:g}: {r['level']:.3g}"
                                                       for r in rows)
    return {"sims": sims, "panel": {"verdict": "pass" if ok else "fail", "detail": detail,
                                    "rows": rows}}


def _draw(ax: plt.Axes, sims: dict[Any, dict[str, Any]], label: Any, title: str) -> None:
    for key, sim in sims.items():
        text = label(key)
        if sim["diverged_fraction"] > 0:
            text += f" ({sim['diverged_fraction']:.0%} diverged)"
        ax.plot(sim["steps"], sim["loss_mean"], label=text)
    ax.set_yscale("log")
    ax.set_xlabel("step k")
    ax.set_ylabel("f(x) − f*  (mean over surviving runs)")
    ax.set_title(title, fontsize=10)
    ax.axhline(2.0, color="gray", linestyle=":", linewidth=1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot(parts: dict[str, dict[str, Any]], path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    nu_label = {None: "Gaussian"}
    _draw(axes[0, 0], parts["a"]["sims"], lambda nu: f"ν = {nu:g}",
          "(a) DCSGD (Rand-k, ω=3) under Student-t noise, scale 1")
    ax = axes[0, 1]
    for scale, sim in parts["b"]["sims"].items():
        ax.plot(sim["steps"], 100 * sim["diverged"], label=f"scale {scale:g}")
    ax.set_xlabel("step k")
    ax.set_ylabel("runs whose loss has passed 100·f(x0)  (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("(b) DCSGD under Cauchy noise (ν=1) of growing scale: diverged runs", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _draw(axes[1, 0], parts["c"]["sims"], lambda nu: nu_label.get(nu) or f"ν = {nu:g}",
          "(c) DSignSGD under Student-t noise, scale 1 (fatter → higher plateau)")
    _draw(axes[1, 1], parts["d"]["sims"], lambda s: f"scale {s:g}",
          "(d) DSignSGD under Cauchy noise of growing scale (never diverges)")
    fig.suptitle("Figure 5 — ½‖x‖², d=4, N=4, η=0.01, x0=1 (dotted: f(x0)); unbiased vs sign "
                 "compression under heavy-tailed noise")
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


@figure("fig5", CLAIM)
def run(out: Path, preset: str = "quick", seed: int = 0, progress: bool = False,
        sizes: dict[str, int] | None = None) -> FigureOutcome:
    """Reproduce Figure 5 into ``out`` (``sizes`` overrides the preset's runs/steps)."""
    p = PRESETS[preset] | (sizes or {})
    cache = RunCache(Path(out) / "cache" / "fig5")
    with single_thread():
        parts = {"a": _panel_a(cache, p, seed, progress), "b": _panel_b(cache, p, seed, progress),
                 "c": _panel_c(cache, p, seed, progress), "d": _panel_d(cache, p, seed, progress)}
    png = _plot(parts, Path(out) / "fig5.png")
    names = {"a": "a: DCSGD vs tail index", "b": "b: DCSGD vs noise scale",
             "c": "c: DSignSGD vs tail index", "d": "d: DSignSGD vs noise scale"}
    panels = {names[k]: v["panel"] for k, v in parts.items()}
    data = {"config": BASE | {"dcsgd": DCSGD, "sizes": p, "nus_dcsgd": NUS_DCSGD,
                              "nus_sign": [n if n is not None else "gaussian" for n in NUS_SIGN],
                              "scales_dcsgd": SCALES_DCSGD, "scales_sign": SCALES_SIGN}}
    return FigureOutcome("fig5", CLAIM, panels, png, data)
