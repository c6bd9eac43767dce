"""Figures: loss curves with quantile bands, legible without reading the code."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .io import save_figure
from .recording import RunResult


def spans_decades(values: np.ndarray, decades: float = 1.5) -> bool:
    """True when the positive finite values span more than ``decades`` orders of magnitude."""
    finite = values[np.isfinite(values) & (values > 0)]
    return finite.size > 1 and np.log10(finite.max() / finite.min()) > decades


def draw_loss(ax: plt.Axes, result: RunResult, label: str, color: str | None = None,
              band: bool = True, linestyle: str = "-") -> None:
    """Mean loss against the step with the 5–95 % band over runs."""
    (line,) = ax.plot(result.steps, result.loss_mean, label=label, color=color,
                      linestyle=linestyle)
    if band:
        ax.fill_between(result.steps, result.loss_q05, result.loss_q95, alpha=0.2,
                        color=line.get_color(), linewidth=0)


def plot_losses(results: Sequence[tuple[str, RunResult]], path: str | Path, title: str,
                xlabel: str = "step k") -> Path:
    """One PNG of several loss curves (mean and 5–95 % band), log scale when it spans decades."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    values = []
    for label, result in results:
        draw_loss(ax, result, label)
        values.append(result.loss_mean)
        diverged = result.diverged_fraction
        if diverged > 0:
            ax.plot([], [], " ", label=f"{label}: {diverged:.0%} of runs diverged")
    if values and spans_decades(np.concatenate(values)):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss f(x) − f*  (mean, 5–95 % band)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
