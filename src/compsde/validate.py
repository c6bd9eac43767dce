"""Does the SDE track the algorithm? Side-by-side runs with Monte-Carlo error bars (THEORY.md §3).

EF21 with a mask compressor on a diagonal quadratic has no SDE here but exact second moments
(THEORY.md §8b): :func:`validate` hands it to :mod:`compsde.validate_exact`, which judges its
mean loss curve against the exact ``E f_k`` and its late-window mean against the stationary
level.

:func:`validate` runs the discrete algorithm (:func:`~compsde.simulation.simulate`) and its SDE
(:func:`~compsde.sde.simulate_sde`) on one config and compares the mean-loss curves: at each
record the gap ``|mean_alg − mean_sde|`` against ``z · √(se_alg² + se_sde²)`` (both runs are
independent, so this is the Monte-Carlo standard error of the gap), and the across-run spreads
as a ratio. The learning-rate sweep that measures the SDE's weak order, and the first-order
budget it grants, live in :mod:`compsde.validate_sweep` (re-exported here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import check_float, check_int
from .recording import RunResult
from .sde import simulate_sde
from .simulation import simulate
from .validate_sweep import (
    WEAK_ORDER_BUDGET,
    LrSweep,
    fit_slope,
    lr_sweep,
    momentum_rate_of,
    slope_standard_error,
)
from .verdicts import Budget, check, panel

__all__ = ["SPREAD_BUDGET", "WEAK_ORDER_BUDGET", "Z_DEFAULT", "LrSweep", "Validation",
           "compare_curves", "compare_spread", "compare_spread_ratio", "fit_slope", "lr_sweep",
           "momentum_rate_of", "slope_standard_error", "spread_check", "spread_curve",
           "validate"]

Z_DEFAULT = 4.0
# The spread (std of the loss across runs) of a first-order SDE matches the algorithm's to
# first order only, and through the fourth moments of the increments, which a Gaussian
# diffusion does not reproduce (Rand-k's kurtosis grows like d/k): THEORY.md §3, §10.
SPREAD_BUDGET = Budget(
    "first-order spread", 0.25,
    "THEORY.md §3, §10: the spread of the loss depends on the increments' fourth moments, "
    "which the Gaussian diffusion matches only to first order; a wrong diffusion coefficient "
    "c moves the spread by about √c (×2 covariance: +41 %; DSignSGD without −m²: orders of "
    "magnitude in Phase 1)")
ROUNDOFF = 1e-9  # relative spread below which a record is deterministic (round-off only)


def _curve(result: RunResult, z_ci: float = 1.96) -> dict[str, Any]:
    return {"loss_mean": result.loss_mean, "loss_se": result.loss_se,
            "ci_low": result.loss_mean - z_ci * result.loss_se,
            "ci_high": result.loss_mean + z_ci * result.loss_se,
            "diverged_fraction": result.diverged_fraction}


def _gap_statistics(values_a: np.ndarray, se_a: np.ndarray, values_b: np.ndarray,
                    se_b: np.ndarray, steps: np.ndarray, z: float,
                    skip_first: bool) -> dict[str, Any]:
    """Per-record gap of two independent curves against ``z · √(se_a² + se_b²)``."""
    gap = np.abs(values_a - values_b)
    se = np.hypot(se_a, se_b)
    tol = z * se
    rows = slice(1, None) if skip_first and len(gap) > 1 else slice(None)
    with np.errstate(invalid="ignore", divide="ignore"):
        zs = np.where(se > 0, gap / se, np.where(gap > 0, np.inf, 0.0))
    worst = int(np.nanargmax(zs[rows])) + (rows.start or 0)
    return {"gap": gap, "tolerance": tol, "z": z, "max_z": float(np.nanmax(zs[rows])),
            "max_z_step": int(steps[worst]), "rows": rows,
            "agree": bool(np.isfinite(gap[rows]).all() and (gap[rows] <= tol[rows]).all())}


def compare_curves(a: RunResult, b: RunResult, z: float = Z_DEFAULT,
                   skip_first: bool = True) -> dict[str, Any]:
    """Gap statistics of two independent mean-loss curves recorded at the same steps.

    ``tolerance_k = z √(se_a² + se_b²)``; the curves agree when every gap is within it.
    The first record (the shared, deterministic start) is skipped by default.
    """
    if a.loss_mean.shape != b.loss_mean.shape:
        raise ValueError(f"the two results must have the same records, got "
                         f"{a.loss_mean.shape} and {b.loss_mean.shape}")
    stats = _gap_statistics(a.loss_mean, a.loss_se, b.loss_mean, b.loss_se, a.steps, z,
                            skip_first)
    rows = stats.pop("rows")
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = stats["gap"] / np.abs(a.loss_mean)
    return stats | {"max_relative_gap": float(np.nanmax(rel[rows]))}


def spread_curve(result: RunResult) -> tuple[np.ndarray, np.ndarray]:
    """Across-run standard deviation of the loss per record, and its standard error.

    ``se(s) ≈ √((m₄ − s⁴)/R) / (2s)`` (delta method on the sample variance; m₄ the fourth
    central moment), over the runs that have not diverged.
    """
    losses = result.losses
    finite = np.isfinite(losses)
    count = np.maximum(finite.sum(axis=1), 2)
    safe = np.where(finite, losses, 0.0)
    mean = safe.sum(axis=1) / count
    dev = np.where(finite, losses - mean[:, None], 0.0)
    var = (dev**2).sum(axis=1) / (count - 1)
    m4 = (dev**4).sum(axis=1) / count
    std = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(std > 0, np.sqrt(np.maximum(m4 - var**2, 0.0) / count) / (2 * std), 0.0)
    return std, se


def compare_spread(a: RunResult, b: RunResult, z: float = Z_DEFAULT,
                   skip_first: bool = True) -> dict[str, Any]:
    """Gap statistics of the across-run spread (std of the loss) of two independent results.

    The mean curve of a drift-dominated run hardly depends on the diffusion; the spread across
    runs does: with ``S`` scaled by c the spread scales by about √c.
    """
    (sa, ea), (sb, eb) = spread_curve(a), spread_curve(b)
    stats = _gap_statistics(sa, ea, sb, eb, a.steps, z, skip_first)
    stats.pop("rows")
    return stats | {"spread_algorithm": sa, "spread_other": sb}


def compare_spread_ratio(a: RunResult, b: RunResult, k: float = Z_DEFAULT,
                         budget: Budget = SPREAD_BUDGET) -> dict[str, Any]:
    """The spreads of two independent results as a ratio, at the records where both resolve.

    A record is judged when both spreads exceed ``k`` of their se (se > 0) and
    :data:`ROUNDOFF` times the mean loss, so a deterministic stretch (every run the same, se 0)
    is reported, not judged. At a judged record ``z = (|log(s_a/s_b)| − log(1 + β))₊ /
    √((se_a/s_a)² + (se_b/s_b)²)`` with ``β = budget.relative``; the spreads agree when every
    ``z ≤ k``. Well defined where the spread is near zero: such records drop out.
    """
    (sa, ea), (sb, eb) = spread_curve(a), spread_curve(b)
    floor = ROUNDOFF * np.maximum(np.abs(a.loss_mean), np.abs(b.loss_mean))
    judged = (ea > 0) & (eb > 0) & (sa > k * ea) & (sa > floor) & (sb > k * eb) & (sb > floor)
    judged[0] = False                                    # the shared start
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = np.where(judged, np.log(sa / sb), 0.0)
        rel_se = np.where(judged, np.hypot(ea / sa, eb / sb), 1.0)
    excess = np.maximum(np.abs(log_ratio) - math.log1p(budget.relative), 0.0)
    zs = np.where(judged, excess / rel_se, 0.0)
    worst = int(np.argmax(np.where(judged, zs, -1.0)))
    return {"spread_algorithm": sa, "spread_algorithm_se": ea, "spread_other": sb,
            "spread_other_se": eb, "judged": judged, "judged_records": int(judged.sum()),
            "max_z": float(zs.max()) if judged.any() else 0.0,
            "max_z_step": int(a.steps[worst]),
            "ratio_at_worst": float(sa[worst] / sb[worst]) if judged.any() else math.nan,
            "budget": budget, "k": k}


def spread_check(stats: dict[str, Any], what: str) -> dict[str, Any]:
    """The verdict of :func:`compare_spread_ratio`: the largest z over judged records ≤ k."""
    k, budget = stats["k"], stats["budget"]
    return check(f"{what}: largest excess of |log spread ratio| over log(1 + "
                 f"{budget.relative:g}), in se", stats["max_z"], 0.0, relation="at_most",
                 k=0.0, absolute=k,
                 rule=f"{what}: at every record where both spreads are resolved "
                      f"({stats['judged_records']} records) the across-run spreads of the loss "
                      f"agree within a factor 1 + {budget.relative:g} ({budget.name}) + {k:g}·se "
                      f"(worst at step {stats['max_z_step']}, ratio "
                      f"{stats['ratio_at_worst']:.3g})")


@dataclass
class Validation:
    """The algorithm and its SDE on one config, with the gap statistics."""

    algorithm: RunResult
    sde: RunResult
    stats: dict[str, Any]
    first_order: float = 0.0
    first_order_source: str = "none (Monte-Carlo error only; --lr-sweep measures the SDE's " \
                              "O(η) term)"
    spread: dict[str, Any] | None = None
    reference_label = "SDE"

    @property
    def tolerance_curve(self) -> np.ndarray:
        """Per record: ``z · se of the gap + first_order`` (the O(η) weak-error budget)."""
        return self.stats["z"] * np.hypot(self.algorithm.loss_se, self.sde.loss_se) \
            + self.first_order

    def _mean_excess(self) -> tuple[float, int]:
        """Largest ``(gap − first_order)/se`` over records (the start skipped), and its step."""
        gap = self.stats["gap"]
        se = np.hypot(self.algorithm.loss_se, self.sde.loss_se)
        excess = gap - self.first_order
        with np.errstate(invalid="ignore", divide="ignore"):
            zs = np.where(se > 0, excess / se, np.where(excess > 0, np.inf, 0.0))
        zs = np.where(np.isfinite(gap), zs, np.inf)[1:] if len(gap) > 1 else zs
        worst = int(np.argmax(zs))
        return float(zs[worst]), int(self.algorithm.steps[worst + (1 if len(gap) > 1 else 0)])

    @property
    def judgement(self) -> dict[str, Any]:
        """The verdict: every mean gap within ``z`` se + the first-order budget, and (where
        resolved) the spreads within :data:`SPREAD_BUDGET` + ``z`` se."""
        z = self.stats["z"]
        excess, step = self._mean_excess()
        budget = f" + {self.first_order:.3g} (first-order term C·η: " \
                 f"{self.first_order_source})" if self.first_order else ""
        checks = [check("largest gap between the mean curves beyond the first-order budget, "
                        "in se of the gap", excess, 0.0, relation="at_most", k=0.0,
                        absolute=z,
                        rule=f"at every record |mean_algorithm − mean_SDE| ≤ {z:g}·se of the "
                             f"gap{budget} (worst at step {step})")]
        if self.spread is not None and self.spread["judged_records"]:
            checks.append(spread_check(self.spread, "algorithm vs SDE"))
        return panel(checks)

    @property
    def verdict(self) -> str:
        return self.judgement["verdict"]

    def to_dict(self) -> dict[str, Any]:
        judged = self.judgement
        spread = None
        if self.spread is not None:
            spread = {k: v for k, v in self.spread.items() if k != "budget"} | {
                "budget": self.spread["budget"].to_dict()}
        return {"config": self.algorithm.config | {"kind": "validation"},
                "sde_config": self.sde.config, "steps": self.algorithm.steps,
                "time": self.algorithm.time, "algorithm": _curve(self.algorithm),
                "sde": _curve(self.sde), **self.stats,
                "first_order_budget": self.first_order,
                "first_order_source": self.first_order_source,
                "gap_tolerance": self.tolerance_curve, "spread": spread,
                "checks": judged["checks"],
                **{k: judged[k] for k in ("quantity", "measured", "predicted", "tolerance",
                                          "margin", "rule")}, "verdict": self.verdict}


def validate(method: str, landscape: str, noise: str, *, lr: float, steps: int,
             runs: int = 500, z: float = Z_DEFAULT, dt: float | None = None,
             stability: bool = False, moments: str = "auto", batch_noise: str = "scale",
             **common: Any) -> Validation:
    """Run the algorithm and its SDE on the same config and compare their mean losses.

    ``common`` takes the remaining arguments of :func:`~compsde.simulation.simulate` (agents,
    batch, seed, x0, dtype, device, record_every, …). ``batch_noise`` goes to the algorithm
    only: with ``"mean"`` it averages B draws while the SDE keeps the σ/√B convention (§1a).
    ``z`` sets the tolerance in standard errors of the gap (default 4: a per-record false alarm
    rate of 6e-5). EF21 goes to :func:`validate_exact` (``dt``, ``moments`` unused there;
    ``stability=True`` refused).
    """
    from .validate_exact import exact_reference, validate_exact

    if exact_reference(method) is not None:
        if stability:
            raise ValueError(f"stability applies to an SDE; {method} is judged against its "
                             f"exact discrete moments (THEORY.md §8b)")
        return validate_exact(method, landscape, noise, lr=lr, steps=steps, runs=runs, z=z,
                              batch_noise=batch_noise, **common)
    z = check_float("z", z, low=0.0, low_open=True)
    runs = check_int("runs", runs, minimum=2)  # standard errors need two runs
    alg = simulate(method, landscape, noise, lr=lr, steps=steps, runs=runs,
                   batch_noise=batch_noise, **common)
    sde = simulate_sde(method, landscape, noise, lr=lr, steps=steps, runs=runs, dt=dt,
                       stability=stability, moments=moments, **common)
    return Validation(alg, sde, compare_curves(alg, sde, z),
                      spread=compare_spread_ratio(alg, sde, z))
