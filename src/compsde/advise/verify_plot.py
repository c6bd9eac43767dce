"""The picture of ``advise --verify``: the runs' losses with each claim's band, and the
predicted against the measured step time (:mod:`.verify`)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from ..io import save_figure
from .verify import TAIL, Arm


def plot(arms: list[Arm], runs: list[dict[str, Any]], entries: list[dict[str, Any]],
         start: tuple[float, float], path: str | Path) -> Path:
    """Loss curves with each claim's band, and predicted against measured step times."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    l0 = start[0]
    ax.axhline(l0, color="gray", ls=":", label="L₀ (start, fixed examples)")
    for arm, run in zip(arms, runs, strict=True):
        ax.plot(run["losses"], lw=0.8, label=f"{arm.role}: {arm.spec}")
    for entry in entries:
        c = entry["claim"]
        if c is None:
            continue
        base = c["baseline_tail"]
        if math.isfinite(base):
            hi = l0 - (c["predicted"] - c["tolerance"]) * (l0 - base)
            n = len(runs[0]["losses"])
            ax.fill_between([n * (1 - TAIL), n], [base, base], [hi, hi], alpha=0.2,
                            label=f"{entry['spec']}: allowed above DSGD's tail "
                                  f"({entry['verdict']})")
            ax.hlines(c["recommended_tail"], n * (1 - TAIL), n, colors="black",
                      label=f"{entry['spec']}: its tail mean")
    ax.set(xlabel="step", ylabel="training loss (mean over agents)",
           title="the advice, run: baseline and recommended")
    ax.legend(fontsize=7)
    pred, meas, names = [], [], []
    for arm, run in zip(arms, runs, strict=True):
        times = run["step_seconds"]
        if arm.step_seconds is not None and times:
            pred.append(1e3 * arm.step_seconds)
            meas.append(1e3 * statistics.median(times))
            names.append(arm.spec)
    if pred:
        top = 1.5 * max(pred + meas)
        bx.plot([0, top], [0, top], "k-", lw=0.8, label="measured = predicted")
        bx.fill_between([0, top], [0, 0.7 * top], [0, 1.3 * top], color="gray", alpha=0.15,
                        label="± 30 %")
        bx.scatter(pred, meas, zorder=3)
        for x, y, name in zip(pred, meas, names, strict=True):
            bx.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
        bx.set(xlim=(0, top), ylim=(0, top))
        bx.legend(fontsize=7)
    bx.set(xlabel="predicted ms per step (in-process)", ylabel="measured ms per step (median)",
           title="time model")
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
