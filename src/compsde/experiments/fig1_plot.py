"""Drawing of Figure 1 (see :mod:`compsde.experiments.fig1`): four panels in one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from ..io import save_figure
from ..plotting import spans_decades
from ..recording import RunResult

ALG, SDE = "black", "tab:red"
PHASE_COLORS = {1: "tab:orange", 2: "tab:green", 3: "tab:purple"}


def _mark(verdict: str) -> str:
    return "PASS" if verdict == "pass" else "FAIL"


def band_limits(mean: np.ndarray, se: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % band of a mean: ``mean ± 1.96 se`` on a linear axis; on a log axis the
    delta-method band of ``log mean``, ``mean ×/÷ exp(1.96 se/mean)`` (positive and smooth, the
    same to first order where se ≪ mean; a linear band cut at zero would draw spikes)."""
    mean, se = np.asarray(mean, dtype=float), np.asarray(se, dtype=float)
    if not log:
        return mean - 1.96 * se, mean + 1.96 * se
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        factor = np.where(mean > 0, np.exp(1.96 * se / mean), np.nan)
        return mean / factor, mean * factor


def _curve(ax: plt.Axes, res: RunResult, label: str, color: str, style: str = "-",
           band: bool = True, log: bool = True) -> None:
    """Mean loss and its 95 % Monte-Carlo confidence band (:func:`band_limits`)."""
    ax.plot(res.time, res.loss_mean, style, color=color, label=label, linewidth=1.6)
    if band:
        low, high = band_limits(res.loss_mean, res.loss_se, log)
        ax.fill_between(res.time, low, high, color=color, alpha=0.2, linewidth=0)


def _pair_panel(ax: plt.Axes, panel: dict[str, Any], title: str, note: str = "") -> None:
    alg, sde = panel["results"]["algorithm"], panel["results"]["SDE"]
    log = spans_decades(np.concatenate([alg.loss_mean, sde.loss_mean]))
    _curve(ax, alg, f"algorithm (mean of {alg.runs} runs)", ALG, log=log)
    _curve(ax, sde, f"SDE, Euler–Maruyama dt = η (mean of {sde.runs} paths)", SDE, "--",
           log=log)
    if log:
        ax.set_yscale("log")
    gaps = " and ".join(f"{c['measured']:.1f}" for c in panel["checks"])
    what = "means and spreads" if len(panel["checks"]) > 1 else "means"
    ax.set_title(f"{title}\nverdict {_mark(panel['verdict'])}: largest gap between the {what} "
                 f"{gaps} SE (tolerance 4 SE)", fontsize=10)
    if note:
        ax.text(0.98, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})


def _phase_panel(ax: plt.Axes, panel: dict[str, Any]) -> None:
    res = panel["results"]
    alg = res["algorithm"]
    t_end = float(alg.time[-1])
    for phase, (start, stop) in panel["windows"].items():
        stop = t_end if phase == 3 else stop
        ax.axvspan(start, stop, color=PHASE_COLORS[phase], alpha=0.08, linewidth=0)
        ax.text(0.5 * (start + stop), 0.02, f"Phase {phase}", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color=PHASE_COLORS[phase])
    _curve(ax, alg, f"DSignSGD (mean of {alg.runs} runs)", ALG)
    _curve(ax, res["SDE"], "full SDE (erf drift)", SDE, "--", band=False)
    if "phase1" in res:
        ode = res["phase1"]
        ax.plot(ode.time, ode.loss_mean, ":", color=PHASE_COLORS[1], linewidth=2.2,
                label="Phase-1 ODE dX = −sign(∇f) dt")
    if "phase2-slow" in res:
        slow, fast = res["phase2-slow"], res["phase2-fast"]
        ax.fill_between(slow.time, fast.loss_mean, slow.loss_mean, color=PHASE_COLORS[2],
                        alpha=0.45, linewidth=0, label="Phase-2 bounds (drift between two lines)")
    if "phase3" in res:
        p3 = res["phase3"]
        ax.plot(p3.time, p3.loss_mean, "-.", color=PHASE_COLORS[3], linewidth=1.8,
                label="Phase-3 linearised SDE")
    ax.set_yscale("log")
    _phase2_inset(ax, panel)
    checks = ", ".join(f"{name} {_mark(c['verdict'])}" for name, c in panel["checks"].items())
    ax.set_title(f"C. DSignSGD on the quadratic ½‖x‖², d=2 ({_setting(panel)})\n{checks}",
                 fontsize=10)


def _phase2_inset(ax: plt.Axes, panel: dict[str, Any]) -> None:
    """Zoom on Phases 1–2: each phase model's loss relative to DSignSGD's mean (in %)."""
    res = panel["results"]
    alg = res["algorithm"]
    if "phase2-slow" not in res:
        return
    slow, fast = res["phase2-slow"], res["phase2-fast"]
    inset = ax.inset_axes((0.55, 0.36, 0.42, 0.3))

    def rel(model: RunResult) -> np.ndarray:
        return 100.0 * (model.loss_mean / np.interp(model.time, alg.time, alg.loss_mean) - 1.0)

    stop = float(slow.time[-1])
    rows = alg.time <= stop
    ci = 100.0 * 1.96 * alg.loss_se[rows] / alg.loss_mean[rows]
    inset.fill_between(alg.time[rows], -ci, ci, color=ALG, alpha=0.2, linewidth=0)
    inset.axhline(0.0, color=ALG, linewidth=1.0)
    inset.fill_between(slow.time, rel(fast), rel(slow), color=PHASE_COLORS[2], alpha=0.5,
                       linewidth=0)
    if "phase1" in res:
        ode = res["phase1"]
        inset.plot(ode.time, rel(ode), ":", color=PHASE_COLORS[1], linewidth=2.0)
    inset.set_title("zoom: phase models vs DSignSGD (% of its mean loss)", fontsize=7)
    inset.set_xlim(0.0, stop)
    inset.tick_params(labelsize=8)
    inset.set_xlabel("t (Phases 1–2)", fontsize=8)
    inset.grid(alpha=0.3)


def _setting(panel: dict[str, Any]) -> str:
    """``N=4, noise σ=3, η=0.0005`` from the run's config."""
    cfg = panel["results"]["algorithm"].config
    scale = cfg["noise"].split("scale=")[-1]
    return f"N={cfg['agents']}, Gaussian noise σ={scale}, η={cfg['lr']:g}"


def draw(panels: dict[str, dict[str, Any]], path: Path, preset: str) -> Path:
    """Write the 2×2 figure to ``path`` (PNG, atomically)."""
    fig, axes = plt.subplots(2, 3, figsize=(22, 10.5))
    a, b, c, d, e, spare = axes.ravel()
    spare.axis("off")
    _pair_panel(a, panels["A"], f"A. DSGD on Rosenbrock ({_setting(panels['A'])})")
    _pair_panel(b, panels["B"], f"B. DCSGD, Rand-k (k=1 of 4), on the embedded saddle "
                                f"½xᵀHx + ¼‖x‖⁴,\nH = diag(−1, 1, 1, 1) ({_setting(panels['B'])})",
                note="starts on the saddle's stable manifold;\nnoise makes the runs escape")
    _phase_panel(c, panels["C"])
    mlp = panels["D"]
    _pair_panel(d, mlp, f"D. DCSGD, Rand-k (10 %), training a tanh MLP "
                        f"({mlp['dim']} parameters)\non {mlp['images']} Fashion-MNIST images "
                        f"({_setting(mlp)})",
                note="full-batch gradient + injected Gaussian noise\n"
                     "(the noise is added, not minibatch noise)")
    _pair_panel(e, panels["E"], f"E. DCSGD, Rand-1 of 64 (ω = 63), on ½‖x‖², σ = 0.1\n"
                                f"({_setting(panels['E'])})",
                note="the compression of the gradient, ω(∂f)²,\ndominates the noise")
    for ax in axes.ravel()[:5]:
        ax.set_xlabel("time t = k·η (iterations × learning rate)")
        ax.set_ylabel("loss f(x) − f*" if ax is not d else "training loss (cross-entropy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left" if ax is not c else "upper right")
    fig.suptitle("Figure 1: the SDE models track the algorithms — mean loss over runs, "
                 "shaded: 95 % confidence band of the mean (on log axes mean ×/÷ "
                 "exp(1.96 se/mean));\nPASS = means agree within 4 "
                 "Monte-Carlo standard errors at every record (and in A, B, C the spread "
                 "across runs within 25 % + 4 se where resolved); phase "
                 f"models within their theory bands (THEORY.md §10; {preset} preset)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
