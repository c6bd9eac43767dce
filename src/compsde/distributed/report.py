"""The trainer's loss plot: per-step mean loss over ranks and a moving average."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..io import save_figure
from ..plotting import spans_decades


def plot_history(steps: Sequence[int], loss: Sequence[float], path: str | Path,
                 title: str) -> Path:
    """One PNG: training loss (mean over ranks) per step and its moving average."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    values = np.asarray(loss, dtype=float)
    ax.plot(steps, values, color="0.75", linewidth=0.8, label="loss per step (mean over ranks)")
    window = max(1, len(values) // 25)
    if window > 1 and len(values) >= window:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(np.asarray(steps)[window - 1:], smooth, color="C0",
                label=f"moving average over {window} steps")
    if spans_decades(values, math.log10(30)):
        ax.set_yscale("log")
    ax.set_xlabel("step k")
    ax.set_ylabel("training cross-entropy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
