"""Loss recording shared by the simulator and the SDE integrator.

Per-run losses are kept at every recorded step; a run counts as diverged from the first record
where its loss is non-finite or above the threshold, and is left out of the statistics from then
on (the fraction of diverged runs is reported instead of raising).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import check_float
from .io import versions, write_json


class LossRecorder:
    """Collects per-run losses at chosen steps into a (records, runs) float64 array."""

    def __init__(self, record_steps: np.ndarray, runs: int, threshold: float):
        self.record_steps = record_steps
        self.threshold = float(threshold)
        self.losses = np.full((len(record_steps), runs), np.nan)
        self.alive = np.ones(runs, dtype=bool)

    def record(self, index: int, rows: slice, loss: Tensor) -> Tensor:
        """Store the losses of runs ``rows`` at record ``index``; returns the still-alive mask."""
        values = loss.detach().to("cpu", torch.float64).numpy()
        ok = np.isfinite(values) & (np.abs(values) <= self.threshold)
        alive = self.alive[rows] & ok
        self.alive[rows] = alive
        self.losses[index, rows] = np.where(alive, values, np.nan)
        return torch.from_numpy(alive).to(loss.device)


@dataclass
class RunResult:
    """Loss statistics over runs at each recorded step.

    ``loss_mean``/``loss_se`` (standard error) and the 5/50/95 % quantiles are taken over the
    runs that have not diverged; ``diverged`` is the fraction that has, per record.
    """

    steps: np.ndarray
    time: np.ndarray
    losses: np.ndarray
    config: dict[str, Any]
    final_x: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        finite = np.isfinite(self.losses)
        count = finite.sum(axis=1)
        self.diverged = 1.0 - count / self.losses.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            safe = np.where(finite, self.losses, 0.0)
            self.loss_mean = np.where(count > 0, safe.sum(axis=1) / np.maximum(count, 1), np.nan)
            var = np.where(finite, (self.losses - self.loss_mean[:, None]) ** 2, 0.0).sum(axis=1)
            self.loss_se = np.sqrt(var / np.maximum(count - 1, 1) / np.maximum(count, 1))
        quantiles = np.full((3, len(self.steps)), np.nan)
        rows = count > 0
        if rows.any():
            quantiles[:, rows] = np.nanquantile(self.losses[rows], [0.05, 0.5, 0.95], axis=1)
        self.loss_q05, self.loss_q50, self.loss_q95 = quantiles

    @property
    def diverged_fraction(self) -> float:
        """Fraction of runs that diverged by the last record."""
        return float(self.diverged[-1])

    @property
    def runs(self) -> int:
        return int(self.losses.shape[1])

    def tail_mean(self, fraction: float = 0.5) -> tuple[float, float]:
        """Mean loss over the last ``fraction`` ∈ (0, 1] of records and runs, with its
        standard error.

        The standard error treats each run's time-average as one sample (runs are independent;
        records within a run are not), so it is valid for stationary-level comparisons. NaN
        when fewer than two runs are left (all others diverged).
        """
        fraction = check_float("fraction", fraction, low=0.0, high=1.0, low_open=True,
                               text=False)
        start = min(int(len(self.steps) * (1.0 - fraction)), len(self.steps) - 1)
        window = self.losses[start:]
        finite = np.isfinite(window)
        count = finite.sum(axis=0)
        per_run = np.where(finite, window, 0.0).sum(axis=0)[count > 0] / count[count > 0]
        if per_run.size < 2:
            return float("nan"), float("nan")
        return float(per_run.mean()), float(per_run.std(ddof=1) / np.sqrt(per_run.size))

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "steps": self.steps,
            "time": self.time,
            "loss_mean": self.loss_mean,
            "loss_se": self.loss_se,
            "loss_q05": self.loss_q05,
            "loss_q50": self.loss_q50,
            "loss_q95": self.loss_q95,
            "diverged": self.diverged,
            "diverged_fraction": self.diverged_fraction,
            **self.extra,
            "versions": versions(),
        }

    def save(self, out_dir: str | Path, name: str = "result.json") -> Path:
        """Write ``result.json`` (atomically) into ``out_dir``; a folder that cannot be created
        or written, or a folder in place of the file, raises ValueError naming ``out_dir``."""
        from ._checks import check_out_dir

        folder = check_out_dir(out_dir, "out_dir")
        if (folder / name).is_dir():
            raise ValueError(f"out_dir {str(folder)!r}: {name} there is a folder; remove it or "
                             f"choose another out_dir")
        return write_json(folder / name, self.to_dict())


def record_schedule(steps: int, record_every: int, *, runs: int = 1,
                    limit: int | None = None) -> np.ndarray:
    """Steps 0, r, 2r, … and always the last step.

    With ``limit`` (bytes), refuses (``ValueError``) a schedule whose per-run losses
    (records × runs float64) would not fit it, before allocating anything.
    """
    records = steps // record_every + 2
    if limit is not None and records * runs * 8 > limit:
        wanted = -(-steps * runs * 8 // limit)
        raise ValueError(f"record_every must be at least {wanted} for {steps} steps of {runs} "
                         f"runs: recording every {record_every} step(s) keeps "
                         f"{records * runs * 8 / 2**30:.3g} GiB of losses, more than half "
                         f"this machine's memory ({limit / 2**30:.3g} GiB)")
    marks = np.arange(0, steps + 1, record_every)
    if marks[-1] != steps:
        marks = np.append(marks, steps)
    return marks
