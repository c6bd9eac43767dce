"""The picture of the EF-signSGD table (:mod:`.ef`, THEORY.md §8c): gap to SGD against the batch.

Left: the paired test-accuracy gap to SGD (points) of every method at every batch, with error
bars of ±2 se over the seeds and the band ±EF_BAND around 0 that EF-signSGD must stay in.
Right: the same for the final training loss (reported, not judged). The title carries each
check's verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from ..io import save_figure

COLORS = {"scaledsign": "tab:red", "ef-signsgd": "tab:green", "signum:beta=0.9": "tab:purple",
          "dsignsgd": "tab:orange"}
Gaps = Mapping[str, Mapping[int, Mapping[str, float]]]


def plot_gaps(acc_gaps: Gaps, loss_gaps: Gaps, preset: Any,
              panels: Mapping[str, Mapping[str, Any]], path: Path,
              labels: Mapping[str, str]) -> Path:
    """Two subplots (accuracy gap, training-loss gap) against the batch, log₂ x-axis."""
    from .ef import EF_BAND, K_SE

    batches = list(preset.batches)
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 5.2))
    for ax, table, ylabel in ((axes[0], acc_gaps, "test accuracy − SGD's (points)"),
                              (axes[1], loss_gaps, "training loss − SGD's")):
        for i, (method, by_batch) in enumerate(table.items()):
            x = [b * (1 + 0.04 * (i - 2)) for b in batches]   # spread the error bars apart
            y = [by_batch[b]["gap"] for b in batches]
            err = [K_SE * by_batch[b]["se"] if math.isfinite(by_batch[b]["se"]) else 0.0
                   for b in batches]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, lw=1.5,
                        color=COLORS.get(method), label=labels.get(method, method))
        ax.axhline(0.0, color="black", lw=1.0, label="SGD")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.invert_xaxis()
        ax.set_xlabel("batch B (one agent; noise σ/√B grows to the right)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].axhspan(-EF_BAND, EF_BAND, color="tab:green", alpha=0.12,
                    label=f"EF band ±{EF_BAND:g} point (+{K_SE:g} se)")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[0].set_title("judged: final test accuracy, paired by seed (±2 se)", fontsize=9)
    axes[1].set_title("reported: final training loss (fixed training subset)", fontsize=9)
    verdicts = "; ".join(f"{name}: {info.get('verdict', '?').upper()}"
                         for name, info in panels.items())
    fig.suptitle(f"EF-signSGD table on {preset.data}, {preset.model}, {preset.epochs:g} "
                 f"epoch(s) per batch, {preset.seeds} seeds\n{verdicts}", fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
