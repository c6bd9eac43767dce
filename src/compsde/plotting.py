"""Figures: loss curves with quantile bands, legible without reading the code."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .io import save_figure
from .recording import RunResult


def spans_decades(values: np.ndarray, decades: float = 1.5) -> bool:
    """True when the positive finite values span more than ``decades`` orders of magnitude."""
    finite = values[np.isfinite(values) & (values > 0)]
    return finite.size > 1 and np.log10(finite.max() / finite.min()) > decades


METHOD_NAMES = {"dsgd": "DSGD", "dcsgd": "DCSGD", "dsignsgd": "DSignSGD", "signum": "Signum",
                "scaledsign": "scaled sign", "ef21": "EF21", "ef-signsgd": "EF-signSGD"}
TITLE_WIDTH = 76  # characters per title line (fontsize 10) at the default figure width


def readable_spec(spec: str) -> str:
    """``"student-t:nu=1,scale=1"`` → ``"student-t (nu = 1, scale = 1)"``; methods by name,
    ``"dcsgd:randk:ratio=0.2"`` → ``"DCSGD with randk (ratio = 0.2)"``."""
    head, _, rest = str(spec).partition(":")
    if head in METHOD_NAMES:
        name = METHOD_NAMES[head]
        return f"{name} with {readable_spec(rest)}" if rest else name
    if not rest:
        return head
    return f"{head} ({', '.join(item.replace('=', ' = ') for item in rest.split(','))})"


def run_title(kind: str, config: Mapping[str, Any]) -> str:
    """A title of short lines: method, kind and runs; landscape and noise; η, N and B."""
    schedule = config.get("lr_schedule", "constant")
    lines = [f"{readable_spec(config['method'])}: {kind}, {config['runs']} runs",
             f"landscape {readable_spec(config['landscape'])}; noise "
             f"{readable_spec(config['noise'])}",
             f"η = {config['lr']:g}" + (f" ({schedule})" if schedule != "constant" else "")
             + f", N = {config['agents']} agents, B = {config['batch']}"]
    return "\n".join(part for line in lines
                     for part in textwrap.wrap(line, TITLE_WIDTH, break_long_words=False))


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
    minimum = [r.config.get("f_star") for _, r in results]
    known = all(m is not None for m in minimum) if minimum else True
    runs = sorted({r.runs for _, r in results})
    ax.set_ylabel(f"{'f(x) − f*' if known else 'f(x)'}: mean and 5–95 % band")
    ax.plot([], [], " ", label=f"over {', '.join(map(str, runs))} runs")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
