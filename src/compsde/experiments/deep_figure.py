"""Scaling-rule checks on real networks: arms, the verdict, the figure (figures 2 and 4).

A check compares a *reference* configuration, trained with several seeds, with *arms* whose
(lr, B, N) follow a scaling rule of THEORY.md §5 (green) or break it (red), each trained once.

**Level.** A run's level is its mean training loss over the last half of its records (the
same stretch of SDE time t = kη for every arm of a panel; time-averaging lowers the
trajectory noise).

**Verdict.** The tolerance is the half-width of the 99 % *prediction interval* of the level of
one more reference run, from the S reference seeds (mean m, standard deviation s):
``tol = t_{0.995, S−1} · s · √(1 + 1/S)``. A green arm *recovers* the reference when
``|level − m| ≤ tol``, i.e. it is indistinguishable from another seed of the reference; a red
arm *does not* when it falls outside (or diverges). The panel passes when every green arm
recovers and every red arm does not. The level (last half), the confidence (99 %) and S are
fixed before any run. The presets (injected noise, rule-breaking arms, steps) *were* chosen by
looking at runs: each figure module records those seeds (``PRESET_SEEDS``) and judges, by
default, on other seeds (``SEED_OFFSET``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from ..executors import Executor, LocalExecutor, RayExecutor
from ..executors import resolve as resolve_executor
from ..io import save_figure
from ..verdicts import check
from ..verdicts import panel as panel_verdict
from .cache import RunCache, SweepOutcome, run_sweep
from .deep import TAIL, TrainSpec, train

ROLES = ("reference", "follows", "breaks")
LEVEL = 0.99  # confidence of the prediction interval
COLORS = {"follows": ("tab:green", "darkgreen", "limegreen"),
          "breaks": ("tab:red", "darkred", "salmon")}


@dataclass(frozen=True)
class Arm:
    """One configuration of a panel; ``time_unit`` maps its step k to the plot's x-axis
    (e.g. ``η/η_ref`` so that x is the reference's step at equal SDE time t = kη)."""

    label: str
    role: str
    spec: TrainSpec
    rule: str = ""
    time_unit: float = 1.0

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")


@dataclass
class Panel:
    """A titled set of arms (references first) and, once run, their results and verdict."""

    name: str
    title: str
    arms: list[Arm]
    xlabel: str = "step k"
    results: list[dict[str, Any]] = field(default_factory=list)
    judgement: dict[str, Any] = field(default_factory=dict)


def level(result: dict[str, Any], tail: float = TAIL) -> float:
    """Mean training loss over the last ``tail`` of the records; ``inf`` if the run diverged."""
    if result.get("diverged"):
        return math.inf
    losses = [v for v in result["loss"] if v is not None]
    count = max(1, round(len(losses) * tail))
    return float(np.mean(losses[-count:]))


def prediction_tolerance(levels: Sequence[float], confidence: float = LEVEL) -> float:
    """Half-width of the ``confidence`` prediction interval of one more draw (module doc)."""
    values = np.asarray(levels, dtype=float)
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"levels must be at least 2 finite reference levels, got {levels!r}")
    s = float(values.std(ddof=1))
    quantile = float(stats.t.ppf(0.5 + confidence / 2, values.size - 1))
    return quantile * s * math.sqrt(1 + 1 / values.size)


def judge(panel: Panel, confidence: float = LEVEL) -> dict[str, Any]:
    """Verdict of a panel whose results are in (module docstring)."""
    levels = [level(r) for r in panel.results]
    refs = [v for a, v in zip(panel.arms, levels, strict=True) if a.role == "reference"]
    if not all(math.isfinite(v) for v in refs):
        diverged = sum(not math.isfinite(v) for v in refs)
        return panel_verdict([check("reference runs that diverged", diverged, 0.0,
                                    relation="at_most", k=0.0)],
                             detail="a reference run diverged", runs=[])
    mean, tol = float(np.mean(refs)), prediction_tolerance(refs, confidence)
    runs, bad, checks = [], [], []
    for arm, value in zip(panel.arms, levels, strict=True):
        gap = value - mean
        inside = math.isfinite(value) and abs(gap) <= tol
        ok = {"reference": True, "follows": inside, "breaks": not inside}[arm.role]
        runs.append({"label": arm.label, "role": arm.role, "rule": arm.rule, "level": value,
                     "gap": gap, "within_tolerance": inside, "as_claimed": ok,
                     "lr": arm.spec.lr, "batch": arm.spec.batch, "agents": arm.spec.agents,
                     "steps": arm.spec.steps, "seed": arm.spec.seed})
        if arm.role == "follows":
            checks.append(check(f"{arm.label}: level − reference mean", gap, 0.0, k=0.0,
                                absolute=tol, rule=f"{arm.label} follows the rule: its level "
                                                   f"lies inside the reference's prediction "
                                                   f"interval"))
        elif arm.role == "breaks":
            checks.append(check(f"{arm.label}: |level − reference mean|", abs(gap), tol,
                                relation="at_least", k=0.0,
                                rule=f"{arm.label} breaks the rule: its level lies outside "
                                     f"the reference's prediction interval"))
        if not ok:
            bad.append(arm.label)
    pieces = [f"{r['label']} {r['gap']:+.3f}" for r in runs if r["role"] != "reference"]
    detail = (f"reference {mean:.3f} ± tol {tol:.3f} ({len(refs)} seeds, {confidence:.0%} "
              f"prediction interval); gaps: " + ", ".join(pieces))
    if bad:
        detail += "; not as claimed: " + ", ".join(bad)
    result = panel_verdict(
        checks, rule=f"rule-following arms land inside the {confidence:.0%} prediction interval "
                     f"of one more reference seed, rule-breaking arms outside it",
        detail=detail, reference_mean=mean, reference_sd=float(np.std(refs, ddof=1)),
        confidence=confidence, reference_seeds=len(refs), runs=runs, interval=tol)
    assert (result["verdict"] == "pass") == (not bad)
    return result


Compute = Callable[[dict[str, Any]], dict[str, Any]]


def train_config(config: dict[str, Any], device: str = "cpu",
                 progress: bool = False) -> dict[str, Any]:
    """Train the run of a cached config in this process (agents simulated with vmap)."""
    return train(TrainSpec.from_config(config), device=device, progress=progress)


def local_compute(device: str, progress: bool = False) -> Compute:
    """:func:`train_config` on ``device`` (picklable, so sweeps can run it in workers)."""
    return functools.partial(train_config, device=device, progress=progress)


def run_panels(panels: Sequence[Panel], cache: RunCache, compute: Compute, *,
               progress: bool = False, desc: str = "runs",
               extra_key: dict[str, Any] | None = None, jobs: int = 1,
               executor: Executor | str | None = None) -> SweepOutcome:
    """Train every arm of every panel (cached; shared arms run once; one run per task of
    ``executor``, or ``jobs`` at a time in local processes) and judge each panel."""
    configs: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for panel in panels:
        for arm in panel.arms:
            config = arm.spec.config() | (extra_key or {})
            key = cache.key(config)
            if key not in index:
                index[key] = len(configs)
                configs.append(config)
    sweep = run_sweep(configs, compute, cache, progress=progress, desc=desc, jobs=jobs,
                      executor=executor)
    for panel in panels:
        panel.results = [sweep.results[index[cache.key(a.spec.config() | (extra_key or {}))]]
                         for a in panel.arms]
        panel.judgement = judge(panel)
    return sweep


def train_panels(panels: Sequence[Panel], folder: Path, *, device: str,
                 distributed: bool = False, jobs: int = 1, progress: bool = False,
                 desc: str = "runs", executor: Executor | str | None = None) -> dict[str, Any]:
    """Train and judge every panel: runs cached in ``folder`` on the driver, computed in this
    process (vmap over agents) or with torchrun (``distributed``), one run per task of
    ``executor`` (``jobs`` is shorthand for ``processes:jobs``). Returns the sweep's part of
    the figure's JSON: device, backend, run counts, training time and the curves."""
    chosen = resolve_executor(executor, jobs)
    if isinstance(chosen, RayExecutor) and str(device).startswith("cuda"):
        chosen = chosen.with_gpus(1)  # a training run on a GPU needs one per task
    inline = isinstance(chosen, LocalExecutor)
    if distributed:
        from .deep_torchrun import torchrun_compute, torchrun_key

        compute, extra = torchrun_compute(device, progress), torchrun_key()
    else:
        compute, extra = local_compute(device, progress and inline), None
    sweep = run_panels(panels, RunCache(folder), compute, progress=progress, desc=desc,
                       extra_key=extra, executor=chosen)
    return {"device": device,
            "backend": "torchrun" if distributed else "simulated agents (vmap)",
            "runs_computed": len(sweep.computed), "runs_cached": len(sweep.loaded),
            "training_seconds": sum(r.get("seconds", 0.0) for r in sweep.results),
            "confidence": LEVEL,
            "curves": {panel.name: [{"label": a.label, "role": a.role,
                                     "time_unit": a.time_unit, "steps": r["steps"],
                                     "loss": r["loss"]}
                                    for a, r in zip(panel.arms, panel.results, strict=True)]
                       for panel in panels}}


def plot_panels(panels: Sequence[Panel], path: Path, title: str, note: str,
                columns: int | None = None) -> Path:
    """One PNG, a subplot per panel: training loss against the panel's x-axis; the grey band
    over the averaging window is the reference mean ± the prediction interval."""
    columns = columns or len(panels)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 5.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        shade = {"follows": 0, "breaks": 0}
        judged = {r["label"]: r for r in panel.judgement.get("runs", [])}
        for arm, result in zip(panel.arms, panel.results, strict=True):
            x = np.asarray(result["steps"], dtype=float) * arm.time_unit
            y = np.array([np.nan if v is None else v for v in result["loss"]], dtype=float)
            info = judged.get(arm.label, {})
            if arm.role == "reference":
                first = arm is panel.arms[0]
                ax.plot(x, y, color="black", lw=1.0, alpha=0.8,
                        label=f"{arm.label} ({arm.rule})" if first else None)
                continue
            color = COLORS[arm.role][shade[arm.role] % 3]
            shade[arm.role] += 1
            text = f"{arm.label}: {arm.rule}"
            if "gap" in info:
                gap = info["gap"]
                text += f"  Δ={gap:+.3f}" if math.isfinite(gap) else "  diverged"
                text += {("follows", True): "  recovers ✓",
                         ("follows", False): "  does not recover ✗",
                         ("breaks", True): "  fails, as predicted",
                         ("breaks", False): "  recovers: NOT as predicted ✗"}[
                    (arm.role, bool(info.get("as_claimed")))]
            ax.plot(x, y, color=color, lw=1.6,
                    ls="-" if arm.role == "follows" else "--", label=text)
        j = panel.judgement
        if "interval" in j and panel.results:
            ref = panel.results[0]
            x_end = ref["steps"][-1] * panel.arms[0].time_unit
            x0 = x_end * (1 - TAIL)
            ax.fill_between([x0, x_end], j["reference_mean"] - j["interval"],
                            j["reference_mean"] + j["interval"], color="grey", alpha=0.25,
                            label=f"reference level ± tol ({j['confidence']:.0%} PI, "
                                  f"{j['reference_seeds']} seeds)")
        ax.set_title(f"{panel.title}\nverdict: {j.get('verdict', '?').upper()} (green must land "
                     f"inside the grey band, red outside)", fontsize=9)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel("training loss (cross-entropy, fixed training subset)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, -0.02, note, ha="center", va="top", fontsize=8, wrap=True)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
